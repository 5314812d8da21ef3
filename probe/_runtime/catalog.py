"""Every Job the API serves: committed data only, of every target, held here or not.

The book has the Jobs of the targets this daemon holds. On a store shared with other daemons
the rest are read from the store when the API asks, at most once per ``max_age``, and kept
parsed: a row is parsed again only when its document changed. A SQLite store has one owner,
whose book has every Job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import anyio

from probe._cogs.logs import get_logger
from probe._core.record import JobRecord
from probe._runtime.book import JobBook
from probe._store import Store, StoreError

log = get_logger("flink_probe.store")


class JobCatalog:
    def __init__(
        self, book: JobBook, store: Store | None = None, max_age: Callable[[], float] = lambda: 0.0
    ) -> None:
        """``store``: where the other daemons' Jobs are read (None: the book has every Job);
        ``max_age``: seconds an answer may be older than the store (the probe interval)."""
        self._book = book
        self._store = store
        self._max_age = max_age
        self._others: dict[str, tuple[str | None, JobRecord]] = {}
        """job id -> (its stored document, if read from the store; the record)."""
        self._read_at: float | None = None
        self._lock = anyio.Lock()
        self._failing = False

    async def records(self) -> Mapping[str, JobRecord]:
        """Every Job by id: the book's exposed records, and the store's for the rest."""
        exposed = self._book.exposed
        if self._store is None:
            return exposed
        await self._refresh()
        merged = {job_id: record for job_id, (_, record) in self._others.items()}
        merged.update(exposed)
        return merged

    async def get(self, job_id: str) -> JobRecord | None:
        record = self._book.exposed.get(job_id)
        if record is not None or self._store is None:
            return record
        await self._refresh()
        kept = self._others.get(job_id)
        return None if kept is None else kept[1]

    def keep(self, records: Iterable[JobRecord]) -> None:
        """Committed records the book let go (their target's lease was lost): they are served
        until the store has newer ones, so a count shown never goes back."""
        for record in records:
            self._offer(record.job.id, None, record)

    async def _refresh(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._read_at is not None and now - self._read_at < self._max_age():
                return
            self._read_at = now  # a failed read is not tried again sooner either
            held = frozenset(self._book.exposed)
            try:
                # Parsed in the worker thread too: thousands of documents would stall probing.
                changed = await anyio.to_thread.run_sync(self._read_changed, held)
            except StoreError as exc:
                if not self._failing:
                    log.error(
                        "reading other targets' Jobs failed; serving the last read", error=str(exc)
                    )
                self._failing = True
                return
            if self._failing:
                log.info("reading other targets' Jobs works again")
            self._failing = False
            for job_id, document, record in changed:
                self._offer(job_id, document, record)

    def _read_changed(self, held: frozenset[str]) -> list[tuple[str, str, JobRecord]]:
        """The stored Jobs not in ``held`` whose document differs from the one kept, parsed."""
        assert self._store is not None
        changed = []
        for row in self._store.load():
            kept = self._others.get(row.job_id)
            if row.job_id in held or (kept is not None and kept[0] == row.document):
                continue
            try:
                record = JobRecord.from_document(row.document)
            except (ValueError, KeyError, TypeError) as exc:
                log.error(
                    "a stored Job is unreadable; not served",
                    job_id=row.job_id,
                    error=exc.__class__.__name__,
                )
                continue
            changed.append((row.job_id, row.document, record))
        return changed

    def _offer(self, job_id: str, document: str | None, record: JobRecord) -> None:
        """Keep ``record`` unless the one kept is newer."""
        kept = self._others.get(job_id)
        if kept is None or _order(record) >= _order(kept[1]):
            self._others[job_id] = (document, record)


def _order(record: JobRecord) -> tuple[int, int, float]:
    """Stored changes come in resource_version order; touches only move the probe time."""
    return (
        record.job.metadata.resource_version,
        record.ledger.observed,
        record.last_probe_at or 0.0,
    )
