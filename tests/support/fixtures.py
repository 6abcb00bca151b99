"""Pytest fixtures around the simulator; import them into a conftest to use them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.procs import SimHandle, start_simulator


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimHandle]:
    """One simulator process (default config) for the whole test session."""
    handle = start_simulator()
    try:
        yield handle
    finally:
        handle.stop()
