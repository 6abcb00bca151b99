"""Fixtures of the simulator suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from tests.support.fixtures import simulator
from tests.support.procs import SimHandle

__all__ = ["simulator"]

API_KEY = "sk-sim-test-0123456789"


@pytest.fixture
def client(simulator: SimHandle) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=simulator.base_url, api_key=API_KEY, max_retries=0, timeout=10) as sdk:
        yield sdk


@pytest.fixture
async def aclient(simulator: SimHandle) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=simulator.base_url, api_key=API_KEY, max_retries=0, timeout=10
    ) as sdk:
        yield sdk


@pytest.fixture
def http(simulator: SimHandle) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=simulator.root_url, headers=headers, timeout=10) as raw:
        yield raw
