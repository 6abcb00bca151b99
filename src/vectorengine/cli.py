"""The ``vectorengine`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vectorengine import SETTINGS_ENV

if TYPE_CHECKING:
    from vectorengine.settings import Settings

# The command's own imports are kept few: ``serve`` stays the parent of Granian's workers for
# as long as the gateway runs, and everything imported here is memory it holds all that time.


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        sys.exit(2)
    try:
        args.run(args)
    except _ConfigProblem as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


class _UsageError(Exception):
    pass


class _ConfigProblem(Exception):
    """A :class:`vectorengine.settings.ConfigError`, caught where the settings are loaded."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vectorengine", description="Self-hosted AI API gateway.")
    sub = p.add_subparsers(title="commands")

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", help="YAML config file (default: ./vectorengine.yaml if present)")
        return sp

    s = with_config(sub.add_parser("serve", help="run the gateway"))
    s.add_argument("--listen", help="HOST:PORT (overrides the config)")
    s.add_argument("--workers", type=int, help="worker processes (overrides the config)")
    s.set_defaults(run=_serve)

    m = with_config(sub.add_parser("migrate", help="create or upgrade the database schema"))
    m.set_defaults(run=_migrate)

    tok = sub.add_parser("token", help="manage API keys").add_subparsers(title="token commands")
    tc = with_config(tok.add_parser("create", help="create a key (shown once)"))
    tc.add_argument("--name", required=True)
    tc.add_argument("--models", help="comma-separated allow-list (default: every model)")
    tc.add_argument("--key", help="use this key instead of a generated one (automation)")
    tc.add_argument("--expires-in-days", type=float)
    tc.set_defaults(run=_token_create)
    tl = with_config(tok.add_parser("list", help="list keys (never shows them)"))
    tl.set_defaults(run=_token_list)
    td = with_config(tok.add_parser("disable", help="disable a key by id or name"))
    td.add_argument("token")
    td.set_defaults(run=_token_disable)

    ch = sub.add_parser("channel", help="manage upstream channels").add_subparsers(title="channel commands")
    ca = with_config(ch.add_parser("add", help="add a channel"))
    ca.add_argument("--name", required=True)
    ca.add_argument("--type", default="openai")
    ca.add_argument("--base-url", required=True)
    ca.add_argument("--key", action="append", required=True, dest="keys", help="upstream key (repeatable)")
    ca.add_argument("--model", action="append", required=True, dest="models", help="model (repeatable)")
    ca.add_argument("--map", action="append", default=[], help="MODEL=UPSTREAM_MODEL (repeatable)")
    ca.add_argument("--priority", type=int, default=0)
    ca.add_argument("--weight", type=int, default=1)
    ca.add_argument(
        "--balance-alert-below",
        help="alert when a key's provider balance falls below this (the provider's currency)",
    )
    ca.set_defaults(run=_channel_add)
    cl = with_config(ch.add_parser("list", help="list channels"))
    cl.set_defaults(run=_channel_list)
    ct = with_config(ch.add_parser("test", help="send one request through a channel, bypassing routing"))
    ct.add_argument("channel", help="channel id or name")
    ct.add_argument("--model", help="model to test (default: the channel's first)")
    ct.set_defaults(run=_channel_test)

    sim = sub.add_parser("simulate", help="run the built-in fake OpenAI upstream")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=18000)
    sim.add_argument("--latency-ms", type=float, default=0.0)
    sim.add_argument("--chunk-delay-ms", type=float, default=0.0)
    sim.set_defaults(run=_simulate)
    return p


# -- serve -------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    from vectorengine.settings import ConfigError, load_settings

    try:
        return load_settings(args.config)
    except ConfigError as exc:
        raise _ConfigProblem(str(exc)) from None


def _serve(args: argparse.Namespace) -> None:
    """Validate, migrate and seed in a child process; this process then only runs Granian's
    supervisor, so it never imports the configuration or database libraries."""
    from granian import Granian
    from granian.constants import Interfaces, Loops

    request = json.dumps({"config": args.config, "listen": args.listen, "workers": args.workers})
    proc = subprocess.run(
        [sys.executable, "-m", "vectorengine.bootstrap"],
        input=request.encode(),
        stdout=subprocess.PIPE,
        check=False,
    )
    if proc.returncode != 0:  # the child has said why on stderr
        sys.exit(proc.returncode)
    serving = json.loads(proc.stdout)
    print("\n".join(serving["banner"]), flush=True)
    os.environ[SETTINGS_ENV] = serving["settings_json"]
    Granian(
        "vectorengine.app:from_env",
        address=serving["host"],
        port=serving["port"],
        interface=Interfaces.RSGI,
        workers=serving["workers"],
        factory=True,
        loop=Loops.auto,
        log_access=False,
        backlog=2048,
    ).serve()


def _migrate(args: argparse.Namespace) -> None:
    from vectorengine.store.engine import migrate

    migrate(_settings(args).database)
    print("database is up to date")


# -- tokens and channels -------------------------------------------------------------------------


async def _with_store(args: argparse.Namespace, fn: Any) -> Any:
    from vectorengine.store.engine import migrate_async
    from vectorengine.store.repository import Store

    settings = _settings(args)
    await migrate_async(settings.database)
    store = Store.from_url(settings.database)
    try:
        return await fn(store)
    finally:
        await store.close()


def _token_create(args: argparse.Namespace) -> None:
    from vectorengine.keys import generate_key, hash_key, key_hint

    key = args.key or generate_key()
    if len(key) < 16:
        raise _UsageError("--key must be at least 16 characters")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    expires = int((time.time() + args.expires_in_days * 86400) * 1000) if args.expires_in_days else None

    async def run(store: Any) -> Any:
        try:
            return await store.create_token(
                name=args.name,
                key_hash=hash_key(key),
                key_hint=key_hint(key),
                models=models,
                expires_at=expires,
            )
        except KeyError:
            raise _UsageError("that key is already in use") from None

    tok = asyncio.run(_with_store(args, run))
    print(f"token {tok.id} '{tok.name}' created. Its key is shown only now:\n{key}")


def _token_list(args: argparse.Namespace) -> None:
    async def run(store: Any) -> Any:
        return await store.list_tokens()

    rows = [
        {
            "id": t.id,
            "name": t.name,
            "key": t.key_hint,
            "enabled": t.enabled,
            "models": ",".join(t.models) if t.models else "*",
            "expires": time.strftime("%Y-%m-%d %H:%M", time.gmtime(t.expires_at / 1000))
            if t.expires_at
            else "-",
        }
        for t in asyncio.run(_with_store(args, run))
    ]
    _table(rows, ["id", "name", "key", "enabled", "models", "expires"])


def _token_disable(args: argparse.Namespace) -> None:
    async def run(store: Any) -> Any:
        tokens = await store.list_tokens()
        match = [t for t in tokens if str(t.id) == args.token or t.name == args.token]
        if len(match) != 1:
            raise _UsageError(f"{len(match)} tokens match {args.token!r}; give the id")
        return await store.update_token(match[0].id, {"enabled": False})

    tok = asyncio.run(_with_store(args, run))
    print(f"token {tok.id} '{tok.name}' disabled")


def _channel_add(args: argparse.Namespace) -> None:
    from vectorengine.settings import ConfigError, parse_settings

    model_map = {}
    for item in args.map:
        model, sep, upstream = item.partition("=")
        if not sep:
            raise _UsageError(f"--map expects MODEL=UPSTREAM_MODEL, got {item!r}")
        model_map[model] = upstream
    raw = {
        "name": args.name,
        "type": args.type,
        "base_url": args.base_url,
        "keys": args.keys,
        "models": args.models,
        "model_map": model_map,
        "priority": args.priority,
        "weight": args.weight,
    }
    if args.balance_alert_below is not None:
        raw["balance_alert_below"] = args.balance_alert_below
    try:
        fields = parse_settings({"channels": [raw]}).channels[0].stored()  # as the config file is read
    except ConfigError as exc:
        raise _ConfigProblem(str(exc)) from None

    async def run(store: Any) -> Any:
        try:
            return await store.create_channel(fields, managed_by="api")
        except KeyError:
            raise _UsageError(f"a channel named {args.name!r} already exists") from None

    ch = asyncio.run(_with_store(args, run))
    print(f"channel {ch.id} '{ch.name}' added")


def _channel_list(args: argparse.Namespace) -> None:
    async def run(store: Any) -> Any:
        return await store.list_channels()

    rows = [
        {
            "id": c.id,
            "name": c.name,
            "type": c.type,
            "base_url": c.base_url,
            "keys": len(c.keys),
            "models": ",".join(c.models),
            "priority": c.priority,
            "weight": c.weight,
            "enabled": c.enabled,
        }
        for c in asyncio.run(_with_store(args, run))
    ]
    _table(rows, ["id", "name", "type", "base_url", "keys", "models", "priority", "weight", "enabled"])


def _channel_test(args: argparse.Namespace) -> None:
    from vectorengine.channel_test import probe_channel

    async def run(store: Any) -> Any:
        channels = await store.list_channels()
        match = [c for c in channels if str(c.id) == args.channel or c.name == args.channel]
        if not match:
            raise _UsageError(f"no channel {args.channel!r}")
        return await probe_channel(match[0], args.model)

    results = asyncio.run(_with_store(args, run))
    ok = True
    for r in results:
        ok = ok and r.ok
        print(f"key #{r.key_index}: HTTP {r.status} in {r.latency_ms:.0f} ms  {r.detail}")
    if not ok:
        sys.exit(1)


def _simulate(args: argparse.Namespace) -> None:
    from vectorengine.simulator import SimulatorConfig, serve

    serve(
        args.host, args.port, SimulatorConfig(latency_ms=args.latency_ms, chunk_delay_ms=args.chunk_delay_ms)
    )


def _table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
