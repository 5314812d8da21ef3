"""The shared store: Jobs and their leases in PostgreSQL, for replicas and sidecars of one fleet.

psycopg 3, because it is libpq: PGPASSFILE, ``sslmode``/``sslrootcert`` in the URL and every
other libpq option behave exactly as for ``psql``.

Jobs are rows as in the SQLite store, plus their target and restart lower bound. A lease per
target says which instance may probe it and write its Jobs; its fencing token comes from one
sequence, so every new holder's is larger. A write carries the tokens it was probed under and
is refused, in its own transaction, when one is no longer current: a paused or cut-off former
holder can never overwrite its successor. Claims run one at a time (an advisory lock), each
seeing the outcome of the others; lease rows are always locked in target order, by claims and
writes alike, so the two never deadlock.
"""

from __future__ import annotations

import contextlib
import select
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Final, Self

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

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
from probe._store.leases import LeaseRow, plan_claim

CONNECT_TIMEOUT_SECONDS: Final = 10
"""libpq's connect_timeout unless the URL sets one: an unreachable host fails instead of
hanging the daemon's start or a write."""

IDLE_CONNECTIONS: Final = 4
"""Connections kept open between calls (the writer, the claimer, readers)."""

# Advisory lock keys: "FLKP" and a number, to stay clear of other programs' locks.
_MIGRATION_LOCK: Final = 0x464C4B50_00000001
_CLAIM_LOCK: Final = 0x464C4B50_00000002

_SQL: Final = statements.Dialect.of("%s")

_RELEASED: Final = "'-infinity'::timestamptz"
"""The expiry of a released lease: free at once on every clock, and told apart from expired."""

_PASSWORD_IN_URL: Final = (
    "state.url: put the password in state.password_file or state.password_env, not in the URL"
)


class _Connections:
    """Open connections kept for reuse. A new one is made in the calling thread, so a failure
    says at once why (refused, wrong password, ...); one that failed or that the server closed
    while idle is dropped."""

    def __init__(self, conninfo: str, settings: Mapping[str, Any]) -> None:
        self._conninfo = conninfo
        self._settings = dict(settings)
        self._idle: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        self.closed = False

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        connection = psycopg.connect(self._conninfo, autocommit=True, **self._settings)
        try:
            # A batch returns only once durable, whatever the database's or role's default.
            connection.execute("SET synchronous_commit = on")
        except BaseException:
            connection.close()
            raise
        return connection

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        connection = self._reuse()
        if connection is None:
            connection = self.connect()
        try:
            yield connection
        finally:
            self.give_back(connection)

    def give_back(self, connection: psycopg.Connection[tuple[Any, ...]]) -> None:
        reusable = (
            not connection.closed
            and connection.info.transaction_status == pq.TransactionStatus.IDLE
        )
        with self._lock:
            if reusable and not self.closed and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.close()

    def _reuse(self) -> psycopg.Connection[tuple[Any, ...]] | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                connection = self._idle.pop()
            if not _has_unread_input(connection):
                return connection
            # An idle connection is sent something only when it is ended (a server restart,
            # pg_terminate_backend): use a new one rather than fail this call.
            connection.close()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _has_unread_input(connection: psycopg.Connection[tuple[Any, ...]]) -> bool:
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class PostgresStore:
    """The shared store: one PostgreSQL database for every instance of a fleet."""

    def __init__(self, url: str, instance: str, connections: _Connections) -> None:
        """Use :meth:`open`; this only takes over connections to a migrated database."""
        self._url = url
        self.instance = instance
        self._connections = connections

    @classmethod
    def open(cls, url: str, *, instance: str, password: str | None = None) -> Self:
        """Connect to ``url`` and bring its schema up to date (once, whoever starts first).

        The password comes from ``password`` or from libpq (PGPASSFILE); a URL carrying one
        is refused. Raises StoreError, one line, if the database cannot be reached or used,
        or holds a newer schema.
        """
        try:
            conninfo = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise StoreError(
                f"state.url is not a valid PostgreSQL URL: {one_line(str(exc))}"
            ) from None
        if "password" in conninfo:
            raise StoreError(_PASSWORD_IN_URL)
        settings: dict[str, Any] = {}
        if password is not None:
            settings["password"] = password
        if "connect_timeout" not in conninfo:
            settings["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        if "application_name" not in conninfo:
            settings["application_name"] = f"flink-probe {instance}"
        connections = _Connections(url, settings)
        try:
            connection = connections.connect()
            try:
                _migrate(connection, url)
            except BaseException:
                connection.close()
                raise
        except psycopg.Error as exc:
            raise StoreError(f"state.url {url}: {one_line(str(exc))}") from exc
        connections.give_back(connection)
        return cls(url, instance, connections)

    def load(self, targets: Collection[str] | None = None) -> list[StoredJob]:
        query = f"SELECT {statements.JOB_COLUMNS} FROM jobs"
        parameters: tuple[object, ...] = ()
        if targets is not None:
            query += " WHERE target = ANY(%s)"
            parameters = (list(targets),)
        with self._session("reading Jobs from") as connection:
            rows = connection.execute(f"{query} ORDER BY namespace, job_id", parameters).fetchall()
        return [StoredJob(*row) for row in rows]

    def write_batch(
        self,
        jobs: Sequence[StoredJob],
        fences: Mapping[str, int] | None = None,
        events: Sequence[StoredEvent] = (),
    ) -> int:
        """Upsert ``jobs`` and add ``events`` in one transaction, committed synchronously (see
        Store.write_batch).

        The fences are checked in the same transaction, the leases locked until it commits,
        so a takeover waits for a write begun under the old token and refuses any after it.
        The sequence row is locked until the commit too: writers take their numbers in the
        order they commit, so a watch that read up to a number has missed none below it.
        """
        if not jobs and not events:
            return self.sequence()
        targets = {job.target for job in jobs} | {event.target for event in events}
        fenced = {target: fences[target] for target in targets if fences and target in fences}
        # One order for every writer, so two writing the same Jobs cannot deadlock.
        ordered = sorted(jobs, key=lambda job: job.job_id)
        with (
            self._session(f"writing {len(jobs)} jobs to") as connection,
            connection.transaction(),
        ):
            if fenced:
                current = dict(
                    connection.execute(
                        "SELECT target, token FROM leases"
                        f" WHERE target = ANY(%s) AND expires_at <> {_RELEASED}"
                        " ORDER BY target FOR SHARE",
                        (sorted(fenced),),
                    ).fetchall()
                )
                stale = [target for target, token in fenced.items() if current.get(target) != token]
                if stale:
                    raise FencedOut(f"state.url {self._url}", stale)
            return _SQL.write(connection, ordered, events)

    def sequence(self) -> int:
        with self._session("reading the sequence of") as connection:
            return statements.sequence(connection)

    def changes(self, after: int, limit: int) -> Changes:
        with self._session("reading changes from") as connection:
            return _SQL.changes(connection, after, limit)

    def events(self, query: EventQuery) -> list[StoredEvent]:
        with self._session("reading events from") as connection:
            return _SQL.events(connection, query)

    def trim_events(self, older_than: float, max_per_job: int, job_ids: Collection[str]) -> int:
        with self._session("trimming events in") as connection, connection.transaction():
            return _SQL.trim(connection, older_than, max_per_job, job_ids)

    def claim(self, targets: Collection[str], ttl: float) -> tuple[Lease, ...]:
        """See Store.claim; claims run one at a time, each seeing the others' outcome."""
        if ttl <= 0:
            raise ValueError(f"a lease's ttl must be positive, not {ttl}")
        wanted = sorted(set(targets))
        instance = self.instance
        with self._session("claiming leases in") as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
            connection.execute("DELETE FROM instances WHERE expires_at <= now()")
            connection.execute(
                "INSERT INTO instances (instance, targets, expires_at)"
                " VALUES (%s, %s, now() + %s * interval '1 second')"
                " ON CONFLICT (instance) DO UPDATE SET"
                " targets = excluded.targets, expires_at = excluded.expires_at",
                (instance, wanted, ttl),
            )
            wants: dict[str, list[str]] = dict(
                connection.execute("SELECT instance, targets FROM instances").fetchall()
            )
            # Lease rows change only under the claim lock: read them all, lock what changes.
            rows = {
                target: LeaseRow(holder, token, expired, released)
                for target, holder, token, expired, released in connection.execute(
                    f"SELECT target, holder, token, expires_at <= now(), expires_at = {_RELEASED}"
                    " FROM leases WHERE holder = %s"
                    " OR target IN (SELECT unnest(targets) FROM instances)",
                    (instance,),
                )
            }
            plan = plan_claim(instance, wants, rows)
            connection.execute(
                "SELECT FROM leases WHERE target = ANY(%s) ORDER BY target FOR UPDATE",
                (sorted(plan.renew | plan.give_back | set(plan.take)),),
            )
            connection.execute(
                f"UPDATE leases SET expires_at = {_RELEASED} WHERE target = ANY(%s)",
                (sorted(plan.give_back),),
            )
            tokens: dict[str, int] = dict(
                connection.execute(
                    "UPDATE leases SET expires_at = now() + %s * interval '1 second'"
                    " WHERE target = ANY(%s) RETURNING target, token",
                    (ttl, sorted(plan.renew)),
                ).fetchall()
            )
            retaken = sorted(target for target in plan.take if target in rows)
            tokens |= dict(
                connection.execute(
                    "UPDATE leases SET holder = %s, token = nextval('lease_tokens'),"
                    " expires_at = now() + %s * interval '1 second'"
                    " WHERE target = ANY(%s) RETURNING target, token",
                    (instance, ttl, retaken),
                ).fetchall()
            )
            tokens |= dict(
                connection.execute(
                    "INSERT INTO leases (target, holder, token, expires_at)"
                    " SELECT target, %s, nextval('lease_tokens'), now() + %s * interval '1 second'"
                    " FROM unnest(%s::text[]) AS target ORDER BY target RETURNING target, token",
                    (instance, ttl, sorted(set(plan.take) - set(rows))),
                ).fetchall()
            )
        return tuple(
            Lease(
                target,
                token,
                ttl,
                renewed=target in plan.renew,
                taken_over=target in rows and rows[target].holder != instance,
            )
            for target, token in sorted(tokens.items())
        )

    def release(self, targets: Collection[str] | None = None) -> None:
        with self._session("releasing leases in") as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
            # Lock in target order first, as every claim and write does.
            connection.execute(
                f"UPDATE leases SET expires_at = {_RELEASED} WHERE target IN ("
                "  SELECT target FROM leases WHERE holder = %s AND (%s OR target = ANY(%s))"
                "  ORDER BY target FOR UPDATE)",
                (self.instance, targets is None, list(targets or ())),
            )
            if targets is None:
                connection.execute("DELETE FROM instances WHERE instance = %s", (self.instance,))

    def close(self) -> None:
        """Close the connections; idempotent."""
        self._connections.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _session(self, action: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A connection for one call; a database failure becomes a one-line StoreError."""
        if self._connections.closed:
            raise StoreError(f"state.url {self._url} is closed")
        try:
            with self._connections.connection() as connection:
                yield connection
        except psycopg.Error as exc:
            raise StoreError(
                f"{action} state.url {self._url} failed: {one_line(str(exc))}"
            ) from exc


def _migrate(connection: psycopg.Connection[tuple[Any, ...]], url: str) -> None:
    """Bring the database to the schema version in one transaction, under a lock that makes
    instances starting together wait for the first instead of migrating twice."""
    newest = migrations.SCHEMA_VERSION
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        exists = connection.execute("SELECT to_regclass('flink_probe_schema')").fetchone()
        if exists is None or exists[0] is None:
            connection.execute("CREATE TABLE flink_probe_schema (version integer NOT NULL)")
            connection.execute("INSERT INTO flink_probe_schema VALUES (0)")
        (version,) = connection.execute("SELECT version FROM flink_probe_schema").fetchone() or (0,)
        if version > newest:
            raise StoreError(
                f"state.url {url}: schema version {version} is newer than this flink-probe"
                f" understands ({newest}); upgrade flink-probe"
            )
        for migration in migrations.MIGRATIONS[version:]:
            for statement in migration.postgres:
                connection.execute(statement)
        if version < newest:
            connection.execute("UPDATE flink_probe_schema SET version = %s", (newest,))
