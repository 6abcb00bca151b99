"""Ways of sending requests: single HTTP requests (urllib), ``wrk`` runs (with their output
parsed), and runs of the Python load generator ``bench/loadgen.py``."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import urllib.error
import urllib.request
from typing import Any

from harness.config import LOAD_CPU, LOADGEN_SCRIPT, LUA, RAW, WRK_CONNECTIONS


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


# -- wrk -------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(value)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(text: str) -> dict[str, Any]:
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise RuntimeError(f"could not parse wrk output:\n{text}")
    out: dict[str, Any] = {
        "requests": int(m.group(1)),
        "duration_s": _ms(m.group(2) + m.group(3)) / 1000,
        "non_2xx": 0,
        "socket_errors": {},
        "latency_ms": {},
    }
    if rps := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["rps"] = float(rps.group(1))
    if non := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        out["non_2xx"] = int(non.group(1))
    if se := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        out["socket_errors"] = dict(
            zip(("connect", "read", "write", "timeout"), map(int, se.groups()), strict=True)
        )
    for pct, val in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", text, re.M):
        out["latency_ms"][f"p{pct}"] = round(_ms(val), 3)
    return out


def run_wrk(wrk: str, url: str, seconds: int, env: dict[str, str]) -> dict[str, Any]:
    argv = [
        "taskset", "-c", LOAD_CPU, wrk, "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s",
        "--latency", "-s", str(LUA), url,
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    result = parse_wrk(proc.stdout)
    result["command"] = shlex.join(argv)
    return result


# -- loadgen.py ------------------------------------------------------------------------------------


def run_loadgen(python: str, name: str, argv: list[str]) -> dict[str, Any]:
    """One ``loadgen.py`` run on the load CPU; its JSON result is kept in ``out/raw/<name>.json``."""
    RAW.mkdir(parents=True, exist_ok=True)
    out = RAW / f"{name}.json"
    full = ["taskset", "-c", LOAD_CPU, python, str(LOADGEN_SCRIPT), *argv, "--out", str(out)]
    proc = subprocess.run(full, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen {name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["command"] = shlex.join(full)
    return result
