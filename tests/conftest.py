"""Fixtures shared by the suites: fake Flink for the daemon's end-to-end tests, and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from postgres_cluster import Database, PostgresCluster, session_cluster

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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's private PostgreSQL server (tests/support/postgres_cluster.py)."""
    with session_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_database(postgres_cluster: PostgresCluster) -> Iterator[Database]:
    """An empty database of the test's own, dropped afterwards."""
    database = postgres_cluster.create_database()
    yield database
    postgres_cluster.drop_database(database.name)
