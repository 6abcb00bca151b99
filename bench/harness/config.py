"""Fixed settings of a benchmark run: paths, ports, credentials, targets, upstream shapes,
run profiles, and the gateway config file written from them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent  # bench/
REPO_ROOT = BENCH_DIR.parent
OUT = BENCH_DIR / "out"
RAW = OUT / "raw"
LOGS = OUT / "logs"
CONFIG = OUT / "bench.yaml"
DB = OUT / "bench.db"
LUA = BENCH_DIR / "chat.lua"
UPSTREAM_SCRIPT = BENCH_DIR / "upstream.py"
LOADGEN_SCRIPT = BENCH_DIR / "loadgen.py"

HOST = "127.0.0.1"
GATEWAY_PORT = 18080
TOKEN = "sk-bench-0123456789abcdef"
# A token billed to a user, with every limit on (all generous), to measure accounting's cost.
BILLED_TOKEN = "sk-bench-billed-0123456789abcdef"
ADMIN_KEY = "adm-bench-key-0123456789"
GATEWAY_CPU = "0"
LOAD_CPU = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRK_CONNECTIONS = 50
CHAT_PATH = "/v1/chat/completions"
SCENARIOS = ("throughput", "latency", "ttft", "streamcpu", "resilience")

TARGETS = {
    "cpu_us_per_request": 150.0,
    "accounting_us": 30.0,
    "cpu_us_per_chunk": 15.0,
    "added_p99_ms": 2.0,
    "rss_mb": 150.0,
}


@dataclass(frozen=True)
class UpstreamSpec:
    name: str
    port: int
    model: str
    chunks: int
    delay_ms: float

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{CHAT_PATH}"


# One upstream process per stream shape (chunk count and delay are CLI flags of upstream.py);
# each is a channel of its own in the gateway, selected by model name.
UPSTREAMS = (
    UpstreamSpec("upstream", 18001, "gpt-4o-mini", 20, 0.0),
    UpstreamSpec("upstream-long", 18002, "bench-long", 200, 0.0),
    UpstreamSpec("upstream-paced", 18003, "bench-paced", 200, 1.0),
)


@dataclass(frozen=True)
class Profile:
    wrk_warm_s: int
    wrk_s: int
    wrk_repeats: int
    open_rate: float
    open_s: float
    ttft_count: int
    loop_s: float
    loop_repeats: int
    burst_concurrency: int
    paced_concurrency: int
    soak_requests: int
    soak_segment_s: int


FULL = Profile(
    wrk_warm_s=3,
    wrk_s=15,
    wrk_repeats=3,
    open_rate=200.0,
    open_s=20.0,
    ttft_count=1000,
    loop_s=15.0,
    loop_repeats=3,
    burst_concurrency=10,
    paced_concurrency=20,
    soak_requests=1_000_000,
    soak_segment_s=30,
)
QUICK = Profile(
    wrk_warm_s=1,
    wrk_s=3,
    wrk_repeats=1,
    open_rate=200.0,
    open_s=4.0,
    ttft_count=200,
    loop_s=4.0,
    loop_repeats=1,
    burst_concurrency=10,
    paced_concurrency=20,
    soak_requests=50_000,
    soak_segment_s=5,
)


# The resilience scenario: two channels on the first upstream, three keys each. One has a key
# failing every other call with 500 and one answering 429 in bursts (see upstream.py); the
# other has three healthy keys and is the baseline.
RESILIENT_MODEL = "bench-resilient"
HEALTHY3_MODEL = "bench-healthy3"
RESILIENCE_CHANNELS = (
    ("resilient", RESILIENT_MODEL, ("key-ok-1", "key-fail50", "key-burst429")),
    ("healthy3", HEALTHY3_MODEL, ("key-ok-a", "key-ok-b", "key-ok-c")),
)


def write_config(path: Path, extra: str = "", db: Path = DB) -> None:
    """The gateway config: one channel per upstream, one token for all their models."""
    channels = "".join(
        f"  - name: {u.name}\n"
        f"    type: openai\n"
        f"    base_url: http://{HOST}:{u.port}/v1\n"
        f"    keys: [key-{u.name}]\n"
        f"    models: [{u.model}]\n"
        for u in UPSTREAMS
    )
    channels += "".join(
        f"  - name: {name}\n"
        f"    type: openai\n"
        f"    base_url: http://{HOST}:{UPSTREAMS[0].port}/v1\n"
        f"    keys: [{', '.join(keys)}]\n"
        f"    models: [{model}]\n"
        for name, model, keys in RESILIENCE_CHANNELS
    )
    models = ", ".join([*(u.model for u in UPSTREAMS), RESILIENT_MODEL, HEALTHY3_MODEL])
    path.write_text(
        f"listen: {HOST}:{GATEWAY_PORT}\n"
        f"database: sqlite:///{db}\n"
        f"admin_key: {ADMIN_KEY}\n"
        f"channels:\n{channels}"
        f"users:\n"
        f"  - name: bench-user\n"
        f"    initial_balance_usd: 1000000\n"
        f"    daily_cap_usd: 100000\n"
        f"    monthly_cap_usd: 1000000\n"
        f"    rpm: 100000000\n"
        f"tokens:\n"
        f"  - name: bench\n"
        f"    key: {TOKEN}\n"
        f"    models: [{models}]\n"
        f"  - name: bench-billed\n"
        f"    key: {BILLED_TOKEN}\n"
        f"    user: bench-user\n"
        f"    daily_cap_usd: 100000\n"
        f"    quota_usd: 1000000\n"
        f"    rpm: 100000000\n"
        f"    tpm: 100000000000\n"
        f"    max_concurrency: 10000\n" + (extra.rstrip() + "\n" if extra.strip() else "")
    )
