"""Faithful fake upstreams for tests, the offline ``demo`` channel and ``vectorengine simulate``."""

from vectorengine.simulator.config import FAULT_MODES, FaultSpec, SimulatorConfig
from vectorengine.simulator.openai import OpenAISimulator
from vectorengine.simulator.server import serve

__all__ = ["FAULT_MODES", "FaultSpec", "OpenAISimulator", "SimulatorConfig", "serve"]
