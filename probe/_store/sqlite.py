"""The durable store: one opaque JSON document per Job, in a single SQLite file.

The store knows nothing of the Job model. The daemon hands it whole documents, once per
probe round, as one batch; a batch is one transaction. A value is exposed (API, metrics)
only after the batch holding it was written (docs/design.md, "Commit before expose"), so every
commit is synced to disk (``synchronous=FULL``) before ``write_batch`` returns.

One process owns the file at a time: an ``flock`` on a sibling ``.lock`` file, held for the
store's lifetime and released by the kernel when the process dies, even by ``kill -9``. That
process holds every target's lease (``LocalLeases``).
A file that cannot be read as this program's state (corrupt, another program's database,
a newer schema) is refused and left byte for byte as it was, never replaced by an empty
store: it holds restart counts that cannot be observed again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Final, Self, TypeVar

from probe._cogs.errors import one_line
from probe._store import migrations, statements
from probe._store.base import (
    Changes,
    EventQuery,
    FencedOut,
    Lease,
    StoredEvent,
    StoredJob,
    StoreError,
)
from probe._store.leases import LocalLeases

# SQLite's busy_timeout (the `timeout` of sqlite3.connect): how long a statement waits for a
# lock held by another connection (an operator's `sqlite3` shell, say) before failing with
# "database is locked".
BUSY_TIMEOUT_SECONDS: Final = 5.0

_SQL: Final = statements.Dialect.of("?")


_T = TypeVar("_T")


def _sqlite_reason(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return one_line(f"{exc} ({name})" if name else str(exc))


class SQLiteStore:
    """The embedded default store: a single SQLite file in WAL mode."""

    def __init__(self, path: Path, connection: sqlite3.Connection, lock_fd: int) -> None:
        """Use :meth:`open`; this only takes ownership of an opened, checked file."""
        self._path = path
        self._connection: sqlite3.Connection | None = connection
        self._lock_fd = lock_fd
        # The daemon writes from a worker thread; the lock also keeps close() from racing
        # a write still running in that thread at shutdown.
        self._mutex = threading.Lock()
        self._leases = LocalLeases()

    @classmethod
    def open(cls, path: Path) -> Self:
        """Open the state file at ``path``, creating it if missing, and own it until close.

        Raises StoreError, leaving an existing file unchanged, if the file is in use by
        another process, unreadable, corrupt, not flink-probe's, or of a newer schema, or if
        its directory is missing or not writable.
        """
        configured = str(path)
        path = path.absolute()
        if path.is_dir():
            raise StoreError(f"state.path {configured} is a directory, not a file")
        lock_fd = _lock(configured, path)
        try:
            if path.exists():
                _check_existing(path)
            connection = _connect_and_migrate(path)
        except BaseException:
            os.close(lock_fd)  # closing the descriptor releases the flock
            raise
        return cls(path, connection, lock_fd)

    def load(self, targets: Collection[str] | None = None) -> list[StoredJob]:
        query = f"SELECT {statements.JOB_COLUMNS} FROM jobs"
        parameters: tuple[str, ...] = ()
        if targets is not None:
            query += " WHERE target IN (SELECT value FROM json_each(?))"
            parameters = (json.dumps(list(targets)),)
        rows = self._read(
            "reading",
            lambda c: c.execute(f"{query} ORDER BY namespace, job_id", parameters).fetchall(),
        )
        return [StoredJob(*row) for row in rows]

    def write_batch(
        self,
        jobs: Sequence[StoredJob],
        fences: Mapping[str, int] | None = None,
        events: Sequence[StoredEvent] = (),
    ) -> int:
        """Upsert ``jobs`` and add ``events`` in one synced transaction; a stored row never
        goes back.

        A row is replaced only by one with a resource_version and an ``observed`` at least as
        high, so a stale write is ignored; a fence of a released lease refuses the batch
        (FencedOut). On failure (disk full, I/O error, read-only file system) nothing of the
        batch is stored, StoreError is raised, and the store stays usable: the caller keeps
        the batch and retries once the condition clears.
        """
        with self._mutex:
            connection = self._open_connection()
            if not jobs and not events:
                return statements.sequence(connection)
            targets = {job.target for job in jobs} | {event.target for event in events}
            stale = self._leases.stale(fences or {}, targets)
            if stale:
                raise FencedOut(f"state file {self._path}", stale)
            try:
                # A rollback that itself failed (the disk went away) leaves the transaction
                # open; end it before starting this one.
                if connection.in_transaction:
                    connection.rollback()
                connection.execute("BEGIN IMMEDIATE")
                top = _SQL.write(connection, jobs, events)
                connection.execute("COMMIT")
            except BaseException as exc:
                if connection.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        connection.rollback()
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(
                        f"writing {len(jobs)} jobs to state file {self._path} failed: "
                        f"{_sqlite_reason(exc)}"
                    ) from exc
                raise
            return top

    def sequence(self) -> int:
        return self._read("reading", statements.sequence)

    def changes(self, after: int, limit: int) -> Changes:
        return self._read("reading", lambda c: _SQL.changes(c, after, limit))

    def events(self, query: EventQuery) -> list[StoredEvent]:
        return self._read("reading", lambda c: _SQL.events(c, query))

    def trim_events(self, older_than: float, max_per_job: int, job_ids: Collection[str]) -> int:
        def trim(connection: sqlite3.Connection) -> int:
            connection.execute("BEGIN IMMEDIATE")
            try:
                dropped = _SQL.trim(connection, older_than, max_per_job, job_ids)
                connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    connection.rollback()
                raise
            return dropped

        return self._read("trimming events of", trim)

    def _read(self, doing: str, read: Callable[[sqlite3.Connection], _T]) -> _T:
        """``read`` on the connection, under the mutex; a failure raises StoreError."""
        with self._mutex:
            connection = self._open_connection()
            try:
                return read(connection)
            except sqlite3.Error as exc:
                raise StoreError(
                    f"{doing} state file {self._path} failed: {_sqlite_reason(exc)}"
                ) from exc

    def claim(self, targets: Collection[str], ttl: float) -> tuple[Lease, ...]:
        """Every target is granted: no other process can open the file."""
        self._open_connection()
        return self._leases.claim(targets, ttl)

    def release(self, targets: Collection[str] | None = None) -> None:
        self._leases.release(targets)

    def close(self) -> None:
        """Close the file (checkpointing the WAL into it) and release the lock; idempotent."""
        with self._mutex:
            if self._connection is None:
                return
            try:
                self._connection.close()
            except sqlite3.Error as exc:
                raise StoreError(
                    f"closing state file {self._path} failed: {_sqlite_reason(exc)}"
                ) from exc
            finally:
                self._connection = None
                os.close(self._lock_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open_connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError(f"state file {self._path} is closed")
        return self._connection


def _lock(configured: str, path: Path) -> int:
    """Take the exclusive lock on ``<path>.lock``; return its descriptor.

    Creating the lock file is also the honest test that the directory can be written: it
    fails with the kernel's own reason (permission, read-only file system) before SQLite
    gets to say "unable to open database file".
    """
    directory = path.parent
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError as exc:
        raise StoreError(f"state.path {configured}: directory {directory} does not exist") from exc
    except NotADirectoryError as exc:
        raise StoreError(f"state.path {configured}: {directory} is not a directory") from exc
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise StoreError(
                f"state.path {configured}: directory {directory} is not writable ({exc.strerror})"
            ) from exc
        raise StoreError(
            f"state.path {configured}: cannot create lock file {lock_path} ({exc.strerror})"
        ) from exc
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(lock_fd)
        raise StoreError(
            f"state file {path} is in use by another flink-probe process (lock {lock_path} held)"
        ) from exc
    except OSError as exc:
        os.close(lock_fd)
        raise StoreError(f"state file {path}: cannot lock {lock_path} ({exc.strerror})") from exc
    return lock_fd


def _check_existing(path: Path) -> None:
    """Refuse a file that is not a readable flink-probe state file, without writing to it.

    A read-only connection never writes the database file (no checkpoint, no recovery into
    it), so a refused file is left exactly as it was found.
    """
    if not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(f"state file {path} is not readable and writable by this user")
    left_unchanged = (
        "it was left unchanged; restore it from a backup, move it aside, or use another state.path"
    )
    try:
        checker = sqlite3.connect(
            f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_SECONDS
        )
    except sqlite3.Error as exc:
        raise StoreError(f"state file {path} cannot be opened: {_sqlite_reason(exc)}") from exc
    try:
        application_id = checker.execute("PRAGMA application_id").fetchone()[0]
        user_version = checker.execute("PRAGMA user_version").fetchone()[0]
        has_schema = checker.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        quick_check = [row[0] for row in checker.execute("PRAGMA quick_check")]
    except sqlite3.Error as exc:
        raise StoreError(
            f"state file {path} is unreadable or corrupt ({_sqlite_reason(exc)}); {left_unchanged}"
        ) from exc
    finally:
        checker.close()
    if quick_check != ["ok"]:
        raise StoreError(
            f"state file {path} is corrupt (quick_check: {one_line(quick_check[0])});"
            f" {left_unchanged}"
        )
    is_empty_database = application_id == 0 and user_version == 0 and not has_schema
    if application_id != migrations.SQLITE_APPLICATION_ID and not is_empty_database:
        raise StoreError(
            f"state file {path} is a SQLite database of another program, not flink-probe's"
            f" (application_id {application_id:#x}); it was left unchanged; use another"
            " state.path"
        )
    if user_version > migrations.SCHEMA_VERSION:
        raise StoreError(
            f"state file {path} has schema version {user_version}, newer than this"
            f" flink-probe supports ({migrations.SCHEMA_VERSION}); upgrade flink-probe or use"
            " another state.path"
        )


def _sync_directory(directory: Path) -> None:
    """Make the directory entries of the file and its WAL durable: SQLite syncs the entry of
    a WAL it creates but not of the database file, so a power loss soon after the first start
    could otherwise lose the whole file."""
    try:
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    except OSError as exc:
        raise StoreError(
            f"state.path directory {directory} cannot be synced ({exc.strerror})"
        ) from exc


def _connect_and_migrate(path: Path) -> sqlite3.Connection:
    try:
        # isolation_level=None: transactions are begun and committed explicitly, so a batch
        # is exactly one transaction whatever the statements in it.
        connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
        )
    except sqlite3.Error as exc:
        raise StoreError(f"state file {path} cannot be opened: {_sqlite_reason(exc)}") from exc
    try:
        journal_mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if journal_mode != "wal":
            raise StoreError(
                f"state file {path}: SQLite refused WAL mode (journal_mode is {journal_mode})"
            )
        # FULL syncs the WAL on every commit, so a returned write_batch survives power loss,
        # not only a crash of the process (NORMAL's promise).
        connection.execute("PRAGMA synchronous = FULL")
        _migrate(connection)
        _sync_directory(path.parent)
    except sqlite3.Error as exc:
        connection.close()
        raise StoreError(
            f"state file {path} cannot be prepared for writing: {_sqlite_reason(exc)}"
        ) from exc
    except BaseException:
        connection.close()
        raise
    return connection


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring the file to the schema version, each step in its own transaction with its version."""
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    for target, migration in enumerate(migrations.MIGRATIONS[version:], start=version + 1):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in migration.sqlite:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {target}")
            connection.execute("COMMIT")
        except BaseException:
            connection.rollback()
            raise
