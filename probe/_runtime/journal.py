"""The events and the store-wide sequence of changes, as the API and its watches read them.

Everything here is committed data read from the store, so it is the same through every replica
sharing one database. A watch waits for this daemon's next commit, or polls the store at least
every ``poll`` seconds for the other replicas' commits.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from probe._core.events import Event
from probe._core.record import JobRecord
from probe._runtime.book import JobBook
from probe._store import Changes, EventQuery, Store, StoredEvent, StoredJob


class Journal:
    def __init__(self, store: Store, book: JobBook, poll: Callable[[], float]) -> None:
        """``poll``: the longest a watch waits before reading the store again (seconds)."""
        self._store = store
        self._book = book
        self._poll = poll

    async def events(self, query: EventQuery) -> list[Event]:
        """The events ``query`` selects, newest first; raises StoreError."""
        rows = await anyio.to_thread.run_sync(self._store.events, query)
        return [stored_event(row) for row in rows]

    async def sequence(self) -> int:
        """The sequence number of the last commit to the store; raises StoreError."""
        return await anyio.to_thread.run_sync(self._store.sequence)

    async def changes(self, after: int, limit: int) -> Changes:
        """What commits numbered above ``after`` wrote, in order; raises StoreError."""
        return await anyio.to_thread.run_sync(self._store.changes, after, limit)

    async def wait(self, after: int) -> None:
        """Return once a commit numbered above ``after`` may have happened: at this daemon's
        next commit, or after ``poll`` seconds (another replica's)."""
        if self._book.sequence > after:
            return
        with anyio.move_on_after(self._poll()):
            await self._book.committed()


def stored_event(row: StoredEvent) -> Event:
    """The Event resource of a stored row, with its sequence number as resourceVersion."""
    event = Event.model_validate_json(row.document)
    metadata = event.metadata.model_copy(update={"resource_version": row.seq})
    return event.model_copy(update={"metadata": metadata})


def stored_record(row: StoredJob) -> JobRecord:
    """The record of a stored Job; raises ValueError, KeyError or TypeError if unreadable."""
    return JobRecord.from_document(row.document)
