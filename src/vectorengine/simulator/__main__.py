"""``python -m vectorengine.simulator --host H --port P [--latency-ms N] [--chunk-delay-ms N] ...``"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import msgspec

from vectorengine.simulator.config import SimulatorConfig
from vectorengine.simulator.server import CONFIG_ENV, config_from_env, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vectorengine.simulator",
        description=(
            "Serve a fake OpenAI API (chat, completions, embeddings, models) with fault injection. "
            f"A JSON SimulatorConfig in ${CONFIG_ENV} is the base; the options below override it."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, help="delay before every response's first byte")
    parser.add_argument("--chunk-delay-ms", type=float, help="delay between two SSE events")
    parser.add_argument("--model", action="append", dest="models", help="a model for /v1/models (repeatable)")
    parser.add_argument("--strict-models", action="store_true", help="404 for models not listed")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    config = config_from_env()
    changes: dict[str, object] = {}
    if args.latency_ms is not None:
        changes["latency_ms"] = args.latency_ms
    if args.chunk_delay_ms is not None:
        changes["chunk_delay_ms"] = args.chunk_delay_ms
    if args.models:
        changes["models"] = tuple(args.models)
    if args.strict_models:
        changes["strict_models"] = True
    # decoding re-runs the checks of SimulatorConfig.__post_init__
    return SimulatorConfig.from_json(msgspec.json.encode(msgspec.structs.replace(config, **changes)))


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    serve(args.host, args.port, config_from_args(args), args.workers, log_level=args.log_level)


if __name__ == "__main__":
    main()
