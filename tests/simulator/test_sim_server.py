"""The process server: `serve()` and `python -m vectorengine.simulator` start, answer, stop on signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.procs import free_port, start_simulator
from vectorengine.simulator import SimulatorConfig


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited early"
        try:
            response = httpx.get(url, timeout=0.5)
            if response.status_code == 200 and response.json()["server_pid"] == process.pid:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_signal(signum: signal.Signals) -> None:
    port = free_port()
    code = f"from vectorengine.simulator import serve; serve('127.0.0.1', {port}, log_level='warning')"
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/_sim/stats", process)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"authorization": "Bearer k"})
        assert models.status_code == 200
        hanging = None
        if signum == signal.SIGTERM:  # a request that never ends must not hold the shutdown
            script = (
                f"import httpx; httpx.get('http://127.0.0.1:{port}/v1/models', "
                "headers={'authorization': 'Bearer fault-hang'}, timeout=30)"
            )
            hanging = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
            time.sleep(0.3)
        started = time.monotonic()
        os.kill(process.pid, signum)
        assert process.wait(10) == 0
        assert time.monotonic() - started < 5
        time.sleep(0.2)
        assert _group_is_gone(process.pid), "a worker process outlived the server"
        if hanging is not None:
            hanging.kill()
            hanging.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_cli_options_reach_the_app() -> None:
    config = SimulatorConfig(models=("from-env",))
    with start_simulator(config, extra_args=["--chunk-delay-ms", "30", "--model", "cli-model"]) as sim:
        models = httpx.get(f"{sim.base_url}/models", headers={"authorization": "Bearer k"}).json()
        assert [m["id"] for m in models["data"]] == ["cli-model"]
        body = {
            "model": "cli-model",
            "messages": [{"role": "user", "content": "a b"}],
            "stream": True,
            "max_tokens": 3,
        }
        started = time.perf_counter()
        response = httpx.post(
            f"{sim.base_url}/chat/completions", json=body, headers={"authorization": "Bearer k"}
        )
        assert response.status_code == 200
        assert time.perf_counter() - started >= 0.03 * 5  # role + 3 tokens + finish + [DONE]
    assert not sim.alive() and sim.process.returncode == 0
