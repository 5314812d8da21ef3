"""The daemon's Jobs in memory: what the probes work on, and what has been made durable.

Two views, because a value may be shown (API, metrics) only once it is in the store: a
``kill -9`` must never make an exposed restart count go down. Probe rounds fold into the
*working* records and mark them dirty; the committer writes the dirty ones in one transaction
and only then copies them into the *exposed* view that readers see.

One exception: a record whose only change is the probe's time (``lastUpdateTime``; nearly every
probe of a running job) is *touched*: shown at once and stored later, with the Job's next
stored change, once ``TOUCH_STORED_EVERY`` passed, or at shutdown. Storing every Job every
round only for its time would write a row per probe; after a ``kill -9`` such a time can go
back by at most ``TOUCH_STORED_EVERY`` until the Job's next probe. A touch of a Job with an
unstored change pending stays unexposed with it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

import anyio

from probe._cogs.logs import get_logger
from probe._core.events import Event, job_created
from probe._core.record import JobRecord
from probe._store import FencedOut, Store, StoredEvent, StoredJob, StoreError

log = get_logger("flink_probe.store")

TOUCH_STORED_EVERY = 300.0
"""Seconds of probe time after which a touched record is stored anyway."""


@dataclass(slots=True)
class StoreHealth:
    ok: bool = True
    error: str | None = None
    last_commit_at: float | None = None
    commits: int = 0
    failures: int = 0
    jobs_written: int = 0
    events_written: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(namespace, reason) -> events committed by this daemon."""
    events_dropped: int = 0
    """Events deleted by retention (age, or a Job's surplus)."""


@dataclass(frozen=True, slots=True)
class EventRetention:
    """How long events are kept, and how many per Job at most."""

    seconds: float
    max_per_job: int


class Fencing(Protocol):
    """The leases a book writes under, on a store shared with other daemons."""

    def fences(self) -> Mapping[str, int]:
        """The current token of every target this daemon holds."""
        ...

    def fenced_out(self, targets: Collection[str]) -> None:
        """The store refused a write under these targets' tokens: another daemon holds them."""
        ...


DEFAULT_RETENTION: Final = EventRetention(30 * 86400.0, 1000)


class JobBook:
    def __init__(
        self,
        store: Store,
        records: Iterable[JobRecord] = (),
        fencing: Fencing | None = None,
        retention: EventRetention = DEFAULT_RETENTION,
    ) -> None:
        """``fencing``: write only the Jobs of held targets, each under its lease's token
        (None: every Job, unfenced; the store has one owner)."""
        self._store = store
        self._fencing = fencing
        self.retention = retention
        """Replaced by the daemon when a reload changes the ``events`` settings."""
        self._events: list[StoredEvent] = []
        """Events to write with the next batch (those of its Jobs' changes among them)."""
        self.sequence = 0
        """The store-wide sequence number of this book's last commit."""
        self._committed = anyio.Event()
        self._generation: dict[str, int] = {}
        """target -> how often its records were dropped: a batch written meanwhile is not
        exposed for it."""
        self._working: dict[str, JobRecord] = {}
        # target -> ids of its Jobs that are still probed (insertion-ordered set).
        self._probing: dict[str, dict[str, None]] = {}
        self._index(records)
        self._exposed: dict[str, JobRecord] = dict(self._working)
        self._dirty: set[str] = set()
        self._writing: set[str] = set()
        """Ids of the batch being written (a touch of those must wait for the next batch)."""
        self._touched: set[str] = set()
        """Ids whose exposed record is newer than their stored one (only in its times)."""
        self._stored_probe_at: dict[str, float | None] = {
            job_id: record.last_probe_at for job_id, record in self._working.items()
        }
        self._wakeup = anyio.Event()
        self._write_lock = anyio.Lock()
        self.health = StoreHealth()

    @classmethod
    def load(cls, store: Store, retention: EventRetention = DEFAULT_RETENTION) -> JobBook:
        """Read every stored Job (history included); raises StoreError on a bad document."""
        records = []
        for row in store.load():
            try:
                records.append(JobRecord.from_document(row.document))
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreError(
                    f"state file holds an unreadable Job {row.job_id}: {exc.__class__.__name__}"
                ) from None
        book = cls(store, records, retention=retention)
        book.sequence = store.sequence()
        return book

    # Readers (API, metrics, scheduler).

    @property
    def exposed(self) -> Mapping[str, JobRecord]:
        """The durable records: everything a user can see."""
        return self._exposed

    def get(self, job_id: str) -> JobRecord | None:
        """The newest record (working view), for the probe loop."""
        return self._working.get(job_id)

    def working(self) -> Iterable[JobRecord]:
        return self._working.values()

    def probing(self, target: str) -> Iterable[JobRecord]:
        """The target's Jobs that the scheduler still probes (not final, or settling)."""
        return [self._working[job_id] for job_id in self._probing.get(target, ())]

    # Writers (probe rounds, sources).

    def put(self, records: Iterable[JobRecord], events: Iterable[StoredEvent] = ()) -> None:
        """Records to store before they are shown, and the events of their changes (or of
        their targets), written in the same transaction."""
        self._dirty.update(self._index(records))
        self._events.extend(events)
        if self._dirty or self._events:
            self._wakeup.set()

    def create(self, records: Iterable[JobRecord]) -> None:
        """New Jobs to store before they are shown, each with its JOB_STARTING event."""
        records = list(records)
        self.put(
            records,
            [
                event_row(job_created(r.job, r.job.metadata.created_at.timestamp()), r.job.target)
                for r in records
            ],
        )

    async def committed(self) -> None:
        """Return at the next successful commit."""
        await self._committed.wait()

    def touch(self, records: Iterable[JobRecord]) -> None:
        """Records whose only change is the probe's time: shown at once, stored later."""
        for job_id in self._index(records):
            record = self._working[job_id]
            stored_at = self._stored_probe_at.get(job_id)
            if (
                job_id in self._dirty
                or job_id in self._writing
                or stored_at is None
                or record.last_probe_at is None
                or record.last_probe_at - stored_at >= TOUCH_STORED_EVERY
            ):
                self._dirty.add(job_id)
                self._wakeup.set()
            else:
                self._exposed[job_id] = record
                self._touched.add(job_id)

    def _index(self, records: Iterable[JobRecord]) -> list[str]:
        ids = []
        for record in records:
            job_id = record.job.id
            self._working[job_id] = record
            probing = self._probing.setdefault(record.job.target, {})
            if record.probing:
                probing[job_id] = None
            else:
                probing.pop(job_id, None)
            ids.append(job_id)
        return ids

    def drop_targets(self, targets: Collection[str]) -> list[JobRecord]:
        """Forget the Jobs of ``targets`` (their lease is lost); their exposed records, which
        are committed, are returned."""
        targets = set(targets)
        for target in targets:
            self._generation[target] = self._generation.get(target, 0) + 1
            self._probing.pop(target, None)
        gone = [job_id for job_id, record in self._working.items() if record.job.target in targets]
        exposed = []
        for job_id in gone:
            del self._working[job_id]
            record = self._exposed.pop(job_id, None)
            if record is not None:
                exposed.append(record)
            self._stored_probe_at.pop(job_id, None)
        self._dirty.difference_update(gone)
        self._touched.difference_update(gone)
        self._events = [event for event in self._events if event.target not in targets]
        return exposed

    def adopt(self, targets: Collection[str], records: Iterable[JobRecord]) -> None:
        """Take the stored Jobs of ``targets`` (their lease is newly held) in place of any kept."""
        self.drop_targets(targets)
        ids = self._index(records)
        for job_id in ids:
            record = self._working[job_id]
            self._exposed[job_id] = record
            self._stored_probe_at[job_id] = record.last_probe_at

    @property
    def pending(self) -> int:
        return len(self._dirty)

    async def commit(self, touched: bool = False) -> bool:
        """Write every dirty record and pending event (and with ``touched``, every touched
        record: at shutdown) in one transaction; expose them once it is durable."""
        async with self._write_lock:
            if touched:
                self._dirty.update(self._touched)
            if not self._dirty and not self._events:
                return True
            batch = {job_id: self._working[job_id] for job_id in self._dirty}
            self._dirty.clear()
            events, self._events = self._events, []
            targets = {r.job.target for r in batch.values()} | {e.target for e in events}
            generations = {target: self._generation.get(target, 0) for target in targets}

            def kept(target: str) -> bool:
                """Whether the target's Jobs were not dropped while the batch was written."""
                return self._generation.get(target, 0) == generations[target]

            started = time.monotonic()
            self._writing = set(batch)
            try:
                batch, events, sequence = await self._write(batch, events)
            except StoreError as exc:
                # Keep the batch: later records of the same Jobs supersede it, the rest retry
                # (but for the Jobs of a target dropped meanwhile).
                self._dirty.update(job_id for job_id in batch if job_id in self._working)
                self._events[:0] = [event for event in events if kept(event.target)]
                self.health.failures += 1
                if self.health.ok:
                    log.error("store write failed; retrying, values stay unexposed", error=str(exc))
                self.health.ok, self.health.error = False, str(exc)
                return False
            finally:
                self._writing = set()
            if not self.health.ok:
                log.info("store writes resumed", jobs=len(batch))
            # Records of a target dropped while the batch was written are not shown again.
            batch = {job_id: record for job_id, record in batch.items() if kept(record.job.target)}
            self._exposed.update(batch)
            self._touched.difference_update(batch)
            for job_id, record in batch.items():
                self._stored_probe_at[job_id] = record.last_probe_at
            self.sequence = max(self.sequence, sequence)
            self._committed.set()
            self._committed = anyio.Event()
            health = self.health
            health.ok, health.error = True, None
            health.last_commit_at = time.time()
            health.commits += 1
            health.jobs_written += len(batch)
            health.events_written.update((event.namespace, event.reason) for event in events)
            log.debug("committed", jobs=len(batch), seconds=round(time.monotonic() - started, 4))
        if events:
            await self._trim({event.job_id for event in events if event.job_id is not None})
        return True

    async def _write(
        self, batch: dict[str, JobRecord], events: list[StoredEvent]
    ) -> tuple[dict[str, JobRecord], list[StoredEvent], int]:
        """Write ``batch`` and ``events`` in one transaction; what of them was written, and the
        store's sequence number after it. Under fencing, only the held targets' are, and a
        target fenced out is dropped and the rest written again."""
        rows = [_row(r) for r in batch.values()]
        if self._fencing is None:
            sequence = await anyio.to_thread.run_sync(self._store.write_batch, rows, None, events)
            return batch, events, sequence
        while True:
            fences = dict(self._fencing.fences())
            batch = {job_id: r for job_id, r in batch.items() if r.job.target in fences}
            events = [event for event in events if event.target in fences]
            rows = [_row(r) for r in batch.values()]
            try:
                sequence = await anyio.to_thread.run_sync(
                    self._store.write_batch, rows, fences, events
                )
            except FencedOut as exc:
                log.warning(
                    "another instance holds these targets now; dropping them",
                    targets=sorted(exc.targets),
                )
                self._fencing.fenced_out(exc.targets)
                continue
            return batch, events, sequence

    async def _trim(self, job_ids: set[str]) -> None:
        """Drop the events past retention: those too old, and the surplus of ``job_ids``."""
        retention = self.retention
        older_than = time.time() - retention.seconds
        try:
            dropped = await anyio.to_thread.run_sync(
                self._store.trim_events, older_than, retention.max_per_job, job_ids
            )
        except StoreError as exc:
            log.warning(
                "dropping old events failed; retrying after the next commit", error=str(exc)
            )
            return
        if dropped:
            self.health.events_dropped += dropped
            log.info("old events dropped", events=dropped)

    async def run_committer(self, retry_after: float = 1.0) -> None:
        """Commit whenever something is dirty; back off while the store fails."""
        while True:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            if not await self.commit():
                await anyio.sleep(retry_after)
                self._wakeup.set()


def event_row(event: Event, target: str) -> StoredEvent:
    """An event as the store keeps it, written under ``target``'s lease."""
    metadata = event.metadata
    return StoredEvent(
        event_id=metadata.id,
        namespace=metadata.namespace,
        job_id=metadata.job_id,
        deployment_name=metadata.deployment_name,
        reason=metadata.name.value,
        created_at=metadata.created_at.timestamp(),
        target=target,
        document=event.model_dump_json(by_alias=True),
    )


def _row(record: JobRecord) -> StoredJob:
    job = record.job
    return StoredJob(
        job_id=job.id,
        namespace=job.metadata.namespace,
        state=job.state.value,
        resource_version=job.metadata.resource_version,
        document=record.to_document(),
        target=job.target,
        observed=record.ledger.observed,
    )
