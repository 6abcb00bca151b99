"""Run the real gateway (``vectorengine serve``) as a child process for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ADMIN_KEY = "adm-test-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    port: int
    config: dict[str, Any]
    workdir: Path
    log_path: Path
    admin_key: str = ADMIN_KEY
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def database(self) -> str:
        return str(self.config["database"])

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=10
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


def write_config(workdir: Path, config: dict[str, Any]) -> Path:
    path = workdir / "vectorengine.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_gateway(
    workdir: Path,
    config: dict[str, Any] | None = None,
    *,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    wait: float = 30.0,
) -> GatewayProcess:
    """Start ``vectorengine serve`` in ``workdir``; ``config=None`` runs with no config file."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "vectorengine", "serve"]
    cfg: dict[str, Any] = {}
    if config is not None:
        cfg = {"listen": f"127.0.0.1:{port}", "admin_key": ADMIN_KEY, **config}
        cfg.setdefault("database", f"sqlite:///{workdir / 'gateway.db'}")
        cmd += ["--config", str(write_config(workdir, cfg))]
        port = int(str(cfg["listen"]).rpartition(":")[2])
    cmd += args or []
    if config is None and not any(a.startswith("--listen") for a in (args or [])):
        cmd += ["--listen", f"127.0.0.1:{port}"]
        cfg = {"database": f"sqlite:///{workdir / 'data' / 'vectorengine.db'}"}
    full_env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    full_env.update(env or {})
    log_path = workdir / f"gateway-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    gw = GatewayProcess(proc, port, cfg, workdir, log_path, env=full_env)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gw.log()}")
        try:
            if httpx.get(gw.url + "/health", timeout=1).status_code == 200:
                return gw
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    gw.stop(signal.SIGKILL)
    raise RuntimeError(f"gateway did not come up:\n{gw.log()}")


def wait_record(gw: GatewayProcess, request_id: str, timeout: float = 10) -> dict[str, Any]:
    with gw.admin() as admin:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = admin.get(f"/api/usage/{request_id}")
            if r.status_code == 200:
                return dict(r.json())
            time.sleep(0.05)
    raise AssertionError(f"no usage record for {request_id}")
