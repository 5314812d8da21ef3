"""The benchmark's PostgreSQL: a private server, a database per scenario, and what it costs.

The server is ``probe.testing.postgres.PostgresCluster`` (``initdb`` in a temporary directory,
loopback only, run as a non-root user, removed afterwards). It inherits the bench's own CPU
affinity, the tier's core, so like nginx it costs the daemon's core nothing; its CPU (every
server process, ended backends included) is measured apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psycopg

from probe.testing.postgres import Database, PostgresCluster, missing_reason

from .machine import children, cpu_times


class DatabaseServer:
    """The run's PostgreSQL server, and the password file every daemon reads."""

    def __init__(self, cluster: PostgresCluster, workdir: Path) -> None:
        self.cluster = cluster
        self.password_file = workdir / "db-password"

    def create(self, name: str) -> Database:
        """An empty database for one scenario (its daemons share it)."""
        try:
            database = self.cluster.create_database(name)
        except psycopg.Error as exc:
            raise RuntimeError(f"creating database {name}: {exc}") from exc
        self.password_file.write_text(database.password)
        self.password_file.chmod(0o600)
        return database

    def state(self, database: Database, instance: str) -> dict[str, str]:
        """The ``state`` section of one daemon sharing ``database``."""
        return {"url": database.url, "password_file": str(self.password_file), "instance": instance}

    def cpu_seconds(self) -> float:
        """CPU of the server so far: the main process, its live and its ended children."""
        pid = self.cluster.server_pid
        if pid is None:
            return 0.0
        own, reaped = cpu_times(pid)
        live = 0.0
        for child in children(pid):
            with contextlib.suppress(OSError):  # a backend may end meanwhile
                live += cpu_times(child)[0]
        return own + reaped + live


@contextlib.contextmanager
def database_server(workdir: Path) -> Iterator[DatabaseServer]:
    """Start a private server for the run; stopped and removed on the way out."""
    reason = missing_reason()
    if reason is not None:
        raise RuntimeError(f"--store postgresql needs a PostgreSQL server: {reason}")
    with PostgresCluster.running() as cluster:
        yield DatabaseServer(cluster, workdir)
