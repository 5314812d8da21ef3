"""Fixtures shared by the suites: fake Flink for the daemon's end-to-end tests, and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from postgres_cluster import Database, PostgresCluster, session_cluster

from probe.testing import FakeCluster, FakeFlinkServer

if TYPE_CHECKING:
    from probe._store.postgres import PostgresStore


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


@pytest.fixture
def open_pg(postgres_database: Database) -> Iterator[Callable[[str], PostgresStore]]:
    """Opens stores on the test's database as named instances; closes them afterwards."""
    # Imported here: only a PostgreSQL test loads psycopg, as only a daemon on PostgreSQL does.
    from probe._store.postgres import PostgresStore

    opened: list[PostgresStore] = []

    def open_as(instance: str) -> PostgresStore:
        store = PostgresStore.open(
            postgres_database.url, instance=instance, password=postgres_database.password
        )
        opened.append(store)
        return store

    yield open_as
    for store in opened:
        store.close()
