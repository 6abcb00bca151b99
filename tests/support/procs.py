"""Start the simulator in a subprocess on a free port and stop it by PID.

``start_simulator()`` runs ``python -m vectorengine.simulator`` (Granian, RSGI) with the
configuration passed as JSON in the environment, waits until ``/_sim/stats`` answers, and
returns a :class:`SimHandle`. The process gets its own session, so ``stop()`` can also reap
Granian's worker processes by process group if the main process does not exit in time.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import httpx

from vectorengine.simulator import SimulatorConfig
from vectorengine.simulator.server import CONFIG_ENV

_HOST = "127.0.0.1"


def unique_key(prefix: str = "sk-test") -> str:
    """An API key with its own call counter; ``prefix`` may be a fault key (``fault-429``),
    since the fault key grammar treats anything after ``_`` as a free label."""
    return f"{prefix}_{uuid4().hex[:10]}"


def free_port(host: str = _HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SimHandle:
    """A running simulator process."""

    process: subprocess.Popen[bytes]
    port: int
    host: str = _HOST
    log_path: Path | None = None
    config: SimulatorConfig = field(default_factory=SimulatorConfig)
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1`` (what SDKs take as ``base_url``)."""
        return f"{self.root_url}/v1"

    def stats(self) -> dict[str, Any]:
        """``{"calls": {key: n}, "faults": {key: n}, "by_path": {path: n}, "total": n, "server_pid": …}``
        plus ``statuses``, ``aborted``, ``last_abort_ms``, ``calls_at``, ``overrides``, ``window_origin``."""
        response = httpx.get(f"{self.root_url}/_sim/stats", timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def calls(self, key: str) -> int:
        count: int = self.stats()["calls"].get(key, 0)
        return count

    def reset(self) -> None:
        httpx.post(f"{self.root_url}/_sim/reset", timeout=5).raise_for_status()

    # -- runtime fault overrides (``/_sim/keys/{key}``); per worker process, like the counters

    def _key_url(self, key: str) -> str:
        return f"{self.root_url}/_sim/keys/{quote(key, safe='')}"

    def set_fault(self, key: str, spec: str | None) -> dict[str, Any]:
        """Make ``key`` behave as ``spec`` (the key grammar without ``fault-`` and label: ``"500"``,
        ``"429-ra2"``, ``"ratelimit-l60"``), or as a healthy key for ``None``, whatever its name
        says. Its fault counter and rate-limit buckets start afresh. Returns the key's state."""
        response = httpx.put(self._key_url(key), json={"fault": spec}, timeout=5)
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def clear_fault(self, key: str) -> dict[str, Any]:
        """Drop the override of ``key`` (back to its configured fault or its name); its state."""
        response = httpx.delete(self._key_url(key), timeout=5)
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def fault_state(self, key: str) -> dict[str, Any]:
        """``{"key", "source": override|config|key|none, "fault": spec or None, "settings"}``."""
        response = httpx.get(self._key_url(key), timeout=5)
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    # -- provider balances (``/_sim/balances/{key}``); per worker process, like the overrides

    def set_balance(self, key: str, amount: str) -> dict[str, Any]:
        """Make the balance endpoints report ``amount`` (a decimal string) for ``key``."""
        url = f"{self.root_url}/_sim/balances/{quote(key, safe='')}"
        response = httpx.put(url, json={"balance": amount}, timeout=5)
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def clear_balance(self, key: str) -> dict[str, Any]:
        """Back to the configured balance of ``key`` (or the default)."""
        response = httpx.delete(f"{self.root_url}/_sim/balances/{quote(key, safe='')}", timeout=5)
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    # -- per-key stats

    def statuses(self, key: str) -> dict[int, int]:
        """How many responses of each status ``key`` got, e.g. ``{200: 3, 429: 1}``."""
        counts: dict[str, int] = self.stats()["statuses"].get(key, {})
        return {int(status): n for status, n in counts.items()}

    def aborted(self, key: str) -> int:
        """How many of ``key``'s requests the client abandoned before the response was complete."""
        count: int = self.stats()["aborted"].get(key, 0)
        return count

    def last_abort_ms(self, key: str) -> float | None:
        """When the simulator noticed the last abandoned request of ``key`` (unix time, ms)."""
        when: float | None = self.stats()["last_abort_ms"].get(key)
        return when

    def wait_aborted(self, key: str, count: int = 1, timeout: float = 2.0) -> int:
        """Poll until ``key`` has ``count`` abandoned requests (or ``timeout`` s); the final count."""
        deadline = time.monotonic() + timeout
        while (seen := self.aborted(key)) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return seen

    def calls_at(self, key: str) -> list[float]:
        """Unix times (ms) of ``key``'s latest calls, oldest first (the simulator keeps 1000)."""
        times: list[float] = self.stats()["calls_at"].get(key, [])
        return times

    def max_calls_within(self, key: str, seconds: float = 60.0) -> int:
        """The most calls of ``key`` that arrived within any ``seconds``-long span."""
        times, span, best, first = self.calls_at(key), seconds * 1000, 0, 0
        for last, at in enumerate(times):
            while at - times[first] >= span:
                first += 1
            best = max(best, last - first + 1)
        return best

    def window_origin(self) -> float:
        """The ``time.monotonic()`` instant (s) the ``w<ms>`` fault windows are aligned to (the
        monotonic clock is shared by all processes of the host)."""
        origin: float = self.stats()["window_origin"]
        return origin

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0, keep_log: bool = False) -> int | None:
        """SIGTERM the simulator, wait, then SIGKILL its process group if needed; the exit code.

        Idempotent. The log file is removed after a clean exit unless ``keep_log``.
        """
        if self._stopped:
            return self.process.returncode
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.process.wait(5)
        self._kill_group()  # any worker a killed main process left behind (same process group)
        self._stopped = True
        if self.process.returncode == 0 and not keep_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
        return self.process.returncode

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _wait_ready(handle: SimHandle, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not handle.alive():
            return False
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = httpx.get(f"{handle.root_url}/_sim/stats", timeout=0.5)
            # Granian binds with SO_REUSEPORT: make sure it is our process that answers
            if response.status_code == 200 and response.json().get("server_pid") == handle.pid:
                return True
        time.sleep(0.05)
    return False


def start_simulator(
    config: SimulatorConfig | None = None,
    *,
    workers: int = 1,
    startup_timeout: float = 20.0,
    extra_args: list[str] | None = None,
) -> SimHandle:
    """Start ``python -m vectorengine.simulator`` on a free loopback port; returns once it answers."""
    config = config or SimulatorConfig()
    env = {**os.environ, CONFIG_ENV: config.to_json()}
    last_log = ""
    for _attempt in range(3):
        port = free_port()
        log_fd, log_name = tempfile.mkstemp(prefix=f"vectorengine-sim-{port}-", suffix=".log")
        command = [
            sys.executable,
            "-m",
            "vectorengine.simulator",
            "--host",
            _HOST,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            *(extra_args or []),
        ]
        with os.fdopen(log_fd, "wb") as log_file:
            process = subprocess.Popen(
                command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        handle = SimHandle(process, port, log_path=Path(log_name), config=config)
        if _wait_ready(handle, time.monotonic() + startup_timeout):
            atexit.register(handle.stop)
            return handle
        last_log = handle.log()
        exited_early = not handle.alive()
        handle.stop(keep_log=True)
        if exited_early and "in use" not in last_log.lower():
            break  # it crashed for another reason than the port: retrying will not help
    raise RuntimeError(f"the simulator did not start; its log:\n{last_log}")
