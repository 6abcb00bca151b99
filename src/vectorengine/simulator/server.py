"""Run the simulator under Granian's process server (RSGI interface).

Granian workers import their target by name, so the configuration travels to them as JSON in
the :data:`CONFIG_ENV` environment variable and :func:`app_factory` rebuilds the app there.
"""

from __future__ import annotations

import os

from granian.constants import HTTPModes, Interfaces
from granian.log import LogLevels
from granian.server import Server

from vectorengine.simulator.config import SimulatorConfig
from vectorengine.simulator.openai import OpenAISimulator

CONFIG_ENV = "VECTORENGINE_SIMULATOR_CONFIG"
TARGET = "vectorengine.simulator.server:app_factory"
SHUTDOWN_TIMEOUT_S = 2  # hanging requests would otherwise hold a graceful stop forever


def config_from_env() -> SimulatorConfig:
    """The configuration in :data:`CONFIG_ENV`, or the defaults when it is unset."""
    raw = os.environ.get(CONFIG_ENV)
    return SimulatorConfig.from_json(raw) if raw else SimulatorConfig()


def app_factory() -> OpenAISimulator:
    """Granian's ``factory=True`` target: the app configured from :data:`CONFIG_ENV`."""
    return OpenAISimulator(config_from_env())


def serve(
    host: str,
    port: int,
    config: SimulatorConfig | None = None,
    workers: int = 1,
    *,
    log_level: str = "info",
) -> None:
    """Serve the simulator on ``host:port`` until SIGINT or SIGTERM; blocks.

    Every worker process keeps its own call counters (``/_sim/stats``) and fault counters.
    """
    os.environ[CONFIG_ENV] = (config or SimulatorConfig()).to_json()
    server = Server(
        TARGET,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=workers,
        http=HTTPModes.auto,
        websockets=False,
        factory=True,
        log_level=LogLevels(log_level),
        workers_kill_timeout=SHUTDOWN_TIMEOUT_S,
    )
    server.serve()
