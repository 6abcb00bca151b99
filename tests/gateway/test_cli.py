"""The ``vectorengine`` command: first run (README command 1), tokens, channels, simulate."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.procs import SimHandle


def ve(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "vectorengine", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_first_run_with_no_config_answers_from_the_demo_channel(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, None)  # like README command 1: no config file, fresh directory
    try:
        out = gw.log()
        assert "DEMO MODE" in out
        key = re.search(r"API key for token 'demo' \(shown once, keep it\): (\S+)", out)
        admin = re.search(r"Admin key \(shown once, keep it\): (\S+)", out)
        assert key and admin
        r = httpx.post(
            gw.base_url + "/chat/completions",
            headers={"Authorization": f"Bearer {key.group(1)}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
        channels = httpx.get(
            gw.url + "/api/channels", headers={"Authorization": f"Bearer {admin.group(1)}"}
        ).json()
        assert [c["name"] for c in channels] == ["demo"]
        assert (tmp_path / "data" / "vectorengine.db").exists()  # SQLite file under ./data/
    finally:
        assert gw.stop() == 0
    # A second start prints no secret again: keys are shown once.
    again = start_gateway(tmp_path, None)
    try:
        assert "shown once" not in again.log()
    finally:
        again.stop()


def test_openai_api_key_adds_a_real_channel_instead_of_the_demo(tmp_path: Path, sim: SimHandle) -> None:
    gw = start_gateway(tmp_path, None, env={"OPENAI_API_KEY": "sk-real", "OPENAI_BASE_URL": sim.base_url})
    try:
        assert "DEMO MODE" not in gw.log()
        admin = re.search(r"Admin key \(shown once, keep it\): (\S+)", gw.log())
        assert admin
        channels = httpx.get(
            gw.url + "/api/channels", headers={"Authorization": f"Bearer {admin.group(1)}"}
        ).json()
        assert [c["name"] for c in channels] == ["openai"]
    finally:
        gw.stop()


def test_config_errors_are_reported_with_their_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"channels": [{"name": "a", "base_url": "http://x", "keys": ["k"], "models": ["m"], "wieght": 3}]}
        )
    )
    r = ve(tmp_path, "serve", "--config", str(cfg), check=False)
    assert r.returncode == 2 and "$.channels[0].wieght: unknown key" in r.stderr


def test_token_and_channel_commands(tmp_path: Path, sim: SimHandle) -> None:
    cfg = tmp_path / "ve.yaml"
    cfg.write_text(
        yaml.safe_dump({"database": f"sqlite:///{tmp_path / 'cli.db'}", "admin_key": "adm-cli-0123456789"})
    )
    c = ["--config", str(cfg)]
    made = ve(tmp_path, "token", "create", "--name", "alice", "--models", "gpt-4o-mini", *c)
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-ve-") and len(key) >= 38
    listed = ve(tmp_path, "token", "list", *c).stdout
    assert "alice" in listed and key not in listed and key[-4:] in listed
    ve(
        tmp_path,
        "channel",
        "add",
        "--name",
        "sim",
        "--base-url",
        sim.base_url,
        "--key",
        "k1",
        "--key",
        "k2",
        "--model",
        "gpt-4o-mini",
        "--map",
        "gpt-4o-mini=gpt-4o-mini-2024-07-18",
        *c,
    )
    assert "sim" in ve(tmp_path, "channel", "list", *c).stdout
    dup = ve(
        tmp_path,
        "channel",
        "add",
        "--name",
        "sim",
        "--base-url",
        sim.base_url,
        "--key",
        "k",
        "--model",
        "m",
        *c,
        check=False,
    )
    assert dup.returncode == 1 and "already exists" in dup.stderr
    tested = ve(tmp_path, "channel", "test", "sim", *c).stdout
    assert tested.count("HTTP 200") == 2  # one probe per key
    # The CLI's changes are picked up by a running gateway; the CLI-made token works there.
    gw = start_gateway(tmp_path, {"database": f"sqlite:///{tmp_path / 'cli.db'}"})
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
        assert client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
        ve(tmp_path, "token", "disable", "alice", *c)
        with pytest.raises(openai.AuthenticationError):
            for _ in range(30):  # the gateway polls the revision counter (1 s by default)
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
                )
                time.sleep(0.1)
    finally:
        gw.stop()


def test_channel_test_reports_a_failing_key(tmp_path: Path, sim: SimHandle) -> None:
    cfg = tmp_path / "ve.yaml"
    cfg.write_text(yaml.safe_dump({"database": f"sqlite:///{tmp_path / 'cli.db'}"}))
    ve(
        tmp_path,
        "channel",
        "add",
        "--name",
        "half",
        "--base-url",
        sim.base_url,
        "--key",
        "good-key",
        "--key",
        "fault-500",
        "--model",
        "gpt-4o-mini",
        "--config",
        str(cfg),
    )
    r = ve(tmp_path, "channel", "test", "half", "--config", str(cfg), check=False)
    assert r.returncode == 1 and "HTTP 200" in r.stdout and "HTTP 500" in r.stdout


def test_serve_refuses_a_port_in_use(tmp_path: Path, gateway: GatewayProcess) -> None:
    # Granian binds with SO_REUSEPORT: without a check, a second server would silently share it.
    r = ve(tmp_path, "serve", "--listen", f"127.0.0.1:{gateway.port}", check=False)
    assert r.returncode == 1 and f"cannot listen on 127.0.0.1:{gateway.port}" in r.stderr


def test_channel_add_takes_a_provider_balance_threshold(tmp_path: Path) -> None:
    """``--balance-alert-below`` is read exactly and stored in micro-units, and refused (exit 2,
    naming the key) on a type whose host reports no balance or with more than six decimals."""
    import sqlite3

    db = tmp_path / "cli.db"
    cfg = tmp_path / "ve.yaml"
    cfg.write_text(yaml.safe_dump({"database": f"sqlite:///{db}"}))
    base = ["channel", "add", "--base-url", "http://127.0.0.1:9/v1", "--key", "k", "--model", "m"]
    ve(
        tmp_path,
        *base,
        "--name",
        "ds",
        "--type",
        "deepseek",
        "--balance-alert-below",
        "5.25",
        "--config",
        str(cfg),
    )
    ve(tmp_path, *base, "--name", "plain", "--type", "deepseek", "--config", str(cfg))
    refused = ve(
        tmp_path, *base, "--name", "oa", "--balance-alert-below", "5", "--config", str(cfg), check=False
    )
    assert refused.returncode == 2
    assert "balance_alert_below: upstream type 'openai' reports no balance" in refused.stderr
    fine = ["--name", "x", "--type", "deepseek", "--balance-alert-below", "0.0000001"]
    too_fine = ve(tmp_path, *base, *fine, "--config", str(cfg), check=False)
    assert too_fine.returncode == 2 and "more decimal places than 6" in too_fine.stderr
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, balance_alert_below_micro FROM channels ORDER BY id").fetchall()
    assert rows == [("ds", 5_250_000), ("plain", None)]
