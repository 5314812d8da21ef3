"""Fixtures shared by the daemon's end-to-end suites (tests/test_daemon.py, test_server.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from probe.testing import FakeCluster, FakeFlinkServer


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    """Where a test's daemon keeps its SQLite state."""
    return tmp_path / "flink-probe.db"


@pytest.fixture
async def fake_flink() -> AsyncIterator[FakeFlinkServer]:
    """A fake Flink cluster (no jobs, no lags) served on a free port of 127.0.0.1."""
    async with FakeFlinkServer(FakeCluster()) as server:
        yield server
