"""The SQL both backends run, and the operations made of it, written once.

A backend differs only in its driver's parameter mark (``Dialect``) and in how it opens a
connection and a transaction; sqlite3's and psycopg's connections both ``execute`` alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, Self

from probe._store.base import Changes, EventQuery, StoredEvent, StoredJob

JOB_COLUMNS: Final = "job_id, namespace, state, resource_version, document, target, observed, seq"
"""The columns of a stored Job, in the order of ``StoredJob``'s fields."""

EVENT_COLUMNS: Final = (
    "event_id, namespace, job_id, deployment_name, reason, created_at, target, document, seq"
)
"""The columns of a stored event, in the order of ``StoredEvent``'s fields."""

SEQUENCE: Final = "SELECT value FROM sequence"


class Connection(Protocol):
    """What the operations need of a driver's connection (sqlite3's and psycopg's have it)."""

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def cursor(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """Every statement with parameters, written with one driver's parameter mark."""

    mark: str
    upsert_job: str
    """Insert or replace a Job, unless the stored row is newer or has counted more restarts
    (a row never goes back)."""
    insert_event: str
    """Add an event unless one of its id is stored (a change derived again after a crash)."""
    changed_jobs: str
    """The Jobs written by commits numbered above one number and up to another, in order."""
    changed_events: str
    """The events written by commits numbered above one number and up to another, in order."""
    expired_events: str
    """Delete the events created before a time."""
    surplus_events: str
    """Delete all but the newest few (an offset: their number less one) events of a Job."""

    @classmethod
    def of(cls, mark: str) -> Self:
        def values(columns: str) -> str:
            return ", ".join([mark] * len(columns.split(", ")))

        return cls(
            mark=mark,
            upsert_job=f"""
            INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({values(JOB_COLUMNS)})
            ON CONFLICT (job_id) DO UPDATE SET
                seq = excluded.seq,
                namespace = excluded.namespace,
                state = excluded.state,
                resource_version = excluded.resource_version,
                document = excluded.document,
                target = excluded.target,
                observed = excluded.observed
            WHERE excluded.resource_version >= jobs.resource_version
                AND excluded.observed >= jobs.observed
            """,
            insert_event=(
                f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({values(EVENT_COLUMNS)})"
                " ON CONFLICT DO NOTHING"
            ),
            changed_jobs=(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE seq > {mark} AND seq <= {mark}"
                f" ORDER BY seq LIMIT {mark}"
            ),
            changed_events=(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > {mark} AND seq <= {mark}"
                f" ORDER BY seq LIMIT {mark}"
            ),
            expired_events=f"DELETE FROM events WHERE created_at < {mark}",
            surplus_events=f"""
            DELETE FROM events WHERE job_id = {mark} AND seq < (
                SELECT seq FROM events WHERE job_id = {mark}
                ORDER BY seq DESC LIMIT 1 OFFSET {mark}
            )
            """,
        )

    def write(
        self, connection: Connection, jobs: Sequence[StoredJob], events: Sequence[StoredEvent]
    ) -> int:
        """Write ``jobs`` and ``events`` in the caller's transaction, each under a number of
        its own; returns the highest. The sequence row stays locked until the transaction
        ends, so commits take their numbers in the order they commit."""
        count = len(jobs) + len(events)
        top: int = connection.execute(
            f"UPDATE sequence SET value = value + {count} RETURNING value"
        ).fetchone()[0]
        numbers = iter(range(top - count + 1, top + 1))
        with contextlib.closing(connection.cursor()) as cursor:
            if jobs:
                cursor.executemany(
                    self.upsert_job, [_job_values(job, next(numbers)) for job in jobs]
                )
            if events:
                cursor.executemany(
                    self.insert_event, [_event_values(event, next(numbers)) for event in events]
                )
        return top

    def changes(self, connection: Connection, after: int, limit: int) -> Changes:
        """See ``Store.changes``: read in one snapshot or, on PostgreSQL, in statements that
        each see every commit numbered up to the sequence read first."""
        upto: int = connection.execute(SEQUENCE).fetchone()[0]
        jobs = [
            StoredJob(*row)
            for row in connection.execute(self.changed_jobs, (after, upto, limit)).fetchall()
        ]
        events = [
            StoredEvent(*row)
            for row in connection.execute(self.changed_events, (after, upto, limit)).fetchall()
        ]
        # A full page may have cut a commit's rows: the answer is complete up to its last.
        if len(jobs) >= limit:
            upto = min(upto, jobs[-1].seq)
        if len(events) >= limit:
            upto = min(upto, events[-1].seq)
        return Changes(
            tuple(job for job in jobs if job.seq <= upto),
            tuple(event for event in events if event.seq <= upto),
            upto,
        )

    def events(self, connection: Connection, query: EventQuery) -> list[StoredEvent]:
        """See ``Store.events``."""
        mark = self.mark
        conditions = [f"namespace = {mark}"]
        parameters: list[object] = [query.namespace]
        for condition, value in (
            ("job_id =", query.job_id),
            ("deployment_name =", query.deployment_name),
            ("reason =", query.reason),
            ("created_at >=", query.since),
            ("seq <", query.before),
        ):
            if value is not None:
                conditions.append(f"{condition} {mark}")
                parameters.append(value)
        parameters.append(query.limit)
        statement = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(conditions)}"
            f" ORDER BY seq DESC LIMIT {mark}"
        )
        return [StoredEvent(*row) for row in connection.execute(statement, parameters).fetchall()]

    def trim(
        self,
        connection: Connection,
        older_than: float,
        max_per_job: int,
        job_ids: Collection[str],
    ) -> int:
        """See ``Store.trim_events``; in the caller's transaction."""
        dropped: int = connection.execute(self.expired_events, (older_than,)).rowcount
        for job_id in job_ids:
            surplus = (job_id, job_id, max_per_job - 1)
            dropped += connection.execute(self.surplus_events, surplus).rowcount
        return dropped


def sequence(connection: Connection) -> int:
    """The store-wide sequence number of the last commit."""
    value: int = connection.execute(SEQUENCE).fetchone()[0]
    return value


def _job_values(job: StoredJob, seq: int) -> tuple[object, ...]:
    return (
        job.job_id,
        job.namespace,
        job.state,
        job.resource_version,
        job.document,
        job.target,
        job.observed,
        seq,
    )


def _event_values(event: StoredEvent, seq: int) -> tuple[object, ...]:
    return (
        event.event_id,
        event.namespace,
        event.job_id,
        event.deployment_name,
        event.reason,
        event.created_at,
        event.target,
        event.document,
        seq,
    )
