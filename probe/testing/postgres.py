"""A private PostgreSQL server: its own temporary directory, a non-root user, loopback only.

Debian's server binaries (package ``postgresql``) run a cluster made by ``initdb`` in a
temporary directory, listening on 127.0.0.1 on a free port and on a unix socket inside that
directory, with ``fsync`` on. As root, the server runs as the ``postgres`` user the package
creates (PostgreSQL refuses to run as root). ``PostgresCluster.running()`` makes, starts,
stops and removes one; every user gets a database of its own (``CREATE DATABASE`` is cheap).
The test suite and the benchmark (``python -m bench --store postgresql``) both use it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Final

import psycopg
from psycopg import sql

__all__ = [
    "ROLE",
    "ROLE_PASSWORD",
    "SERVER_USER",
    "Database",
    "PostgresCluster",
    "missing_reason",
    "server_binaries",
]

ROLE: Final = "probe"
"""The role the store connects as, over TCP with a password (scram-sha-256)."""
ROLE_PASSWORD: Final = "probe-secret"
SERVER_USER: Final = "postgres"
"""The operating-system user the server runs as when its user is root."""

_BIN_GLOB: Final = "/usr/lib/postgresql/*/bin"
_START_TIMEOUT_SECONDS: Final = 60
_database_numbers = count(1)


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None without a server."""
    found = sorted(
        (path for path in Path("/").glob(_BIN_GLOB.lstrip("/")) if (path / "initdb").exists()),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def missing_reason() -> str | None:
    """Why no cluster can be started here (None: it can)."""
    if server_binaries() is None:
        return f"no PostgreSQL server in {_BIN_GLOB} (Debian package postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Database:
    """One database of the cluster and how the store reaches it."""

    name: str
    url: str
    """postgresql://probe@127.0.0.1:PORT/NAME (no password: it is passed apart)."""
    password: str


class PostgresCluster:
    """A running private server; :meth:`stop` and :meth:`start` restart it mid-run."""

    def __init__(self, bin_dir: Path, directory: Path) -> None:
        self._bin = bin_dir
        self.directory = directory
        self.data = directory / "data"
        self.socket_dir = directory / "socket"
        self.log = directory / "server.log"
        self.port = _free_port()

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[PostgresCluster]:
        """Make, start and finally stop and remove a cluster."""
        bin_dir = server_binaries()
        if bin_dir is None:
            raise RuntimeError(missing_reason())
        directory = Path(tempfile.mkdtemp(prefix="flink-probe-pg-"))
        try:
            cluster = cls(bin_dir, directory)
            cluster._init()
            try:
                cluster.start()
                cluster.create_role(ROLE, ROLE_PASSWORD)
                yield cluster
            finally:
                if cluster.is_running:
                    cluster.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _as_server_user(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, *command],
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_SECONDS,
            check=False,
            cwd=self.directory,
        )

    def _run(self, *command: str) -> None:
        done = self._as_server_user(*command)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}): {done.stderr}{done.stdout}{log}"
            )

    def _init(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            for path in (self.directory, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(
            str(self._bin / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            SERVER_USER,
            "--auth-local",
            "trust",
            "--auth-host",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
        )
        # The cluster is administered as the superuser over the unix socket (trust);
        # the store comes over TCP, where every role needs its password.
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "on",
            "synchronous_commit": "on",
            "max_connections": "200",
            "shared_buffers": "32MB",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run(
            str(self._bin / "pg_ctl"),
            "start",
            "--wait",
            f"--timeout={_START_TIMEOUT_SECONDS}",
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log),
            "-o",
            f"-p {self.port}",
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended, as in a restart)."""
        self._run(
            str(self._bin / "pg_ctl"),
            "stop",
            "--wait",
            f"--timeout={_START_TIMEOUT_SECONDS}",
            "--mode",
            "fast",
            "--pgdata",
            str(self.data),
        )

    @property
    def is_running(self) -> bool:
        """Whether a server runs on the data directory (its pid file exists until it stops)."""
        return (self.data / "postmaster.pid").exists()

    @property
    def server_pid(self) -> int | None:
        """The server's main process (its pid file's first line), while it runs."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def admin(self, database: str = "postgres") -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """A superuser connection over the unix socket, in autocommit mode."""
        with psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=SERVER_USER,
            dbname=database,
            autocommit=True,
        ) as connection:
            yield connection

    def create_role(self, name: str, password: str) -> None:
        """A login role that must give ``password`` over TCP."""
        with self.admin() as connection:
            connection.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )

    def url(self, database: str, user: str = ROLE, port: int | None = None) -> str:
        """The store's URL of ``database`` (no password: it is passed apart)."""
        return f"postgresql://{user}@127.0.0.1:{port or self.port}/{database}"

    def create_database(self, name: str | None = None) -> Database:
        """A new empty database owned by the store's role (named after the pid if no name)."""
        name = name or f"test_{os.getpid()}_{next(_database_numbers)}"
        with self.admin() as connection:
            connection.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(ROLE)
                )
            )
        return Database(name=name, url=self.url(name), password=ROLE_PASSWORD)

    def drop_database(self, name: str) -> None:
        """Drop a database (restarting the server if it was left stopped)."""
        if not self.is_running:
            self.start()
        with self.admin() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
