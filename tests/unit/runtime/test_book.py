"""The JobBook on a real SQLite file: what is shown before it is stored, and what is not."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import anyio
import pytest
from jobs import JOB_ID, job_of, starting
from simulation import BASE

from probe._core.record import JobRecord
from probe._runtime.book import TOUCH_STORED_EVERY, JobBook
from probe._runtime.ownership import Ownership
from probe._store import StoredEvent, StoredJob
from probe._store.sqlite import SQLiteStore


def record(probed_at: float, version: int = 1) -> JobRecord:
    job = starting(created=BASE).job
    metadata = job.metadata.model_copy(update={"resource_version": version})
    return JobRecord(job.model_copy(update={"metadata": metadata}), last_probe_at=probed_at)


class SlowStore(SQLiteStore):
    """Holds every write until `proceed` is set (a write in flight, from the event loop's view)."""

    proceed: threading.Event
    writing: threading.Event

    def write_batch(
        self,
        jobs: Sequence[StoredJob],
        fences: Mapping[str, int] | None = None,
        events: Sequence[StoredEvent] = (),
    ) -> int:
        self.writing.set()
        self.proceed.wait(timeout=10)
        return super().write_batch(jobs, fences, events)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore.open(tmp_path / "state.db") as opened:
        yield opened


def stored(store: SQLiteStore) -> dict[str, JobRecord]:
    return {row.job_id: JobRecord.from_document(row.document) for row in store.load()}


async def test_a_touch_is_shown_at_once_and_stored_only_at_shutdown(store: SQLiteStore) -> None:
    book = JobBook(store)
    book.put([record(BASE + 10)])
    await book.commit()

    book.touch([record(BASE + 20)])
    assert book.exposed[JOB_ID].last_probe_at == BASE + 20
    assert book.pending == 0
    await book.commit()
    assert stored(store)[JOB_ID].last_probe_at == BASE + 10

    await book.commit(touched=True)
    assert stored(store)[JOB_ID].last_probe_at == BASE + 20


async def test_a_put_is_shown_only_once_stored(store: SQLiteStore) -> None:
    book = JobBook(store)
    book.put([record(BASE + 10)])
    assert JOB_ID not in book.exposed
    await book.commit()
    assert book.exposed[JOB_ID].last_probe_at == BASE + 10


async def test_a_touch_after_an_unstored_change_waits_with_it(store: SQLiteStore) -> None:
    book = JobBook(store)
    book.put([record(BASE + 10)])
    await book.commit()
    book.put([record(BASE + 20, version=2)])  # e.g. a new count: not shown until stored
    book.touch([record(BASE + 30, version=2)])
    assert book.exposed[JOB_ID].last_probe_at == BASE + 10
    await book.commit()
    assert book.exposed[JOB_ID].last_probe_at == BASE + 30
    assert stored(store)[JOB_ID].last_probe_at == BASE + 30


async def test_a_touch_while_the_job_is_being_written_waits_for_the_next_batch(
    tmp_path: Path,
) -> None:
    with SlowStore.open(tmp_path / "state.db") as store:
        store.proceed, store.writing = threading.Event(), threading.Event()
        store.proceed.set()
        book = JobBook(store)
        book.put([record(BASE + 10)])
        await book.commit()

        store.proceed.clear()
        store.writing.clear()
        book.put([record(BASE + 20, version=2)])
        async with anyio.create_task_group() as tg:
            tg.start_soon(book.commit)
            await anyio.to_thread.run_sync(store.writing.wait, 10)
            book.touch([record(BASE + 30, version=2)])
            assert book.exposed[JOB_ID].last_probe_at == BASE + 10, "shown before stored"
            store.proceed.set()
        assert book.exposed[JOB_ID].last_probe_at == BASE + 20
        assert book.pending == 1
        await book.commit()
        assert book.exposed[JOB_ID].last_probe_at == BASE + 30


async def test_a_touch_long_after_the_last_write_is_stored(store: SQLiteStore) -> None:
    book = JobBook(store)
    book.put([record(BASE)])
    await book.commit()
    book.touch([record(BASE + TOUCH_STORED_EVERY - 1)])
    assert book.pending == 0
    book.touch([record(BASE + TOUCH_STORED_EVERY)])
    assert book.pending == 1
    await book.commit()
    assert stored(store)[JOB_ID].last_probe_at == BASE + TOUCH_STORED_EVERY


async def test_a_loaded_job_is_touched_against_its_stored_time(store: SQLiteStore) -> None:
    first = JobBook(store)
    first.put([record(BASE)])
    await first.commit()
    loaded = JobBook.load(store)
    loaded.touch([record(BASE + TOUCH_STORED_EVERY)])
    assert loaded.pending == 1


# -- a store shared with other daemons: fenced writes --------------------------------------


async def test_a_fenced_book_writes_only_held_targets_and_drops_one_fenced_out(
    store: SQLiteStore,
) -> None:
    ownership = Ownership(store, math.inf)
    await ownership.claim(["prod", "staging"])
    book = JobBook(store, fencing=ownership)
    prod, staging, elsewhere = job_of("prod", 1), job_of("staging", 2), job_of("elsewhere", 3)
    store.release(["staging"])  # as when another instance took its lease over

    book.put([prod, staging, elsewhere])
    assert await book.commit()

    assert sorted(stored(store)) == [prod.job.id]  # nothing under a stale or missing lease
    assert sorted(book.exposed) == [prod.job.id]
    assert ownership.held == {"prod"}
    assert book.pending == 0


async def test_dropped_targets_leave_the_book_with_their_committed_records(
    store: SQLiteStore,
) -> None:
    book = JobBook(store)
    prod, staging = job_of("prod", 1), job_of("staging", 2)
    book.put([prod, staging])
    await book.commit()
    book.put([job_of("prod", 1, version=2)])  # not committed yet

    kept = book.drop_targets(["prod"])

    assert kept == [prod]
    assert sorted(book.exposed) == [staging.job.id]
    assert list(book.probing("prod")) == []
    assert book.pending == 0
    await book.commit()
    assert stored(store)[prod.job.id].job.metadata.resource_version == 1


async def test_a_batch_written_while_its_target_was_dropped_is_not_shown(tmp_path: Path) -> None:
    with SlowStore.open(tmp_path / "state.db") as store:
        store.proceed, store.writing = threading.Event(), threading.Event()
        book = JobBook(store)
        book.put([job_of("prod", 1)])
        async with anyio.create_task_group() as tg:
            tg.start_soon(book.commit)
            await anyio.to_thread.run_sync(store.writing.wait, 10)
            book.drop_targets(["prod"])
            store.proceed.set()
        assert book.exposed == {}


async def test_adopted_records_are_shown_at_once_in_place_of_the_kept_ones(
    store: SQLiteStore,
) -> None:
    book = JobBook(store)
    book.put([job_of("prod", 1), job_of("prod", 2)])
    await book.commit()
    loaded = job_of("prod", 1, version=5)

    book.adopt(["prod"], [loaded])

    assert book.exposed == {loaded.job.id: loaded}
    assert [r.job.id for r in book.probing("prod")] == [loaded.job.id]
    assert book.pending == 0
