"""What the API serves: the book's Jobs, and on a shared store the other daemons' Jobs as stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs import job_of

from probe._core.record import JobRecord
from probe._runtime.book import JobBook
from probe._runtime.catalog import JobCatalog
from probe._store import StoredJob
from probe._store.sqlite import SQLiteStore


def written_by_another_daemon(store: SQLiteStore, record: JobRecord) -> None:
    job = record.job
    store.write_batch(
        [
            StoredJob(
                job.id,
                job.metadata.namespace,
                job.state.value,
                job.metadata.resource_version,
                record.to_document(),
                job.target,
                record.ledger.observed,
            )
        ]
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore.open(tmp_path / "state.db") as opened:
        yield opened


async def test_the_single_owner_serves_its_book_and_never_reads_the_store(
    store: SQLiteStore,
) -> None:
    book = JobBook(store)
    written_by_another_daemon(store, job_of("elsewhere", 1))  # cannot happen: for the test

    catalog = JobCatalog(book)

    assert await catalog.records() == {}
    assert await catalog.get(job_of("elsewhere", 1).job.id) is None


async def test_jobs_of_targets_held_elsewhere_are_served_from_the_store(
    store: SQLiteStore,
) -> None:
    book = JobBook(store)
    mine, theirs = job_of("prod", 1), job_of("staging", 2)
    book.put([mine])
    await book.commit()
    written_by_another_daemon(store, theirs)

    catalog = JobCatalog(book, store, max_age=lambda: 60.0)

    assert await catalog.records() == {mine.job.id: mine, theirs.job.id: theirs}
    assert await catalog.get(theirs.job.id) == theirs


async def test_the_store_is_read_at_most_once_per_max_age(store: SQLiteStore) -> None:
    book = JobBook(store)
    max_age = [60.0]
    catalog = JobCatalog(book, store, max_age=lambda: max_age[0])
    assert await catalog.records() == {}

    newer = job_of("staging", 2)
    written_by_another_daemon(store, newer)
    assert await catalog.records() == {}
    max_age[0] = 0.0
    assert await catalog.records() == {newer.job.id: newer}


async def test_records_let_go_by_the_book_are_served_until_the_store_has_newer_ones(
    store: SQLiteStore,
) -> None:
    book = JobBook(store)
    max_age = [60.0]
    catalog = JobCatalog(book, store, max_age=lambda: max_age[0])
    written_by_another_daemon(store, job_of("prod", 1, version=1))
    await catalog.records()  # read before this daemon held the target
    shown = job_of("prod", 1, version=3)  # then committed and shown by it, until it lost the lease

    catalog.keep([shown])

    assert await catalog.get(shown.job.id) == shown  # not the older read: no count goes back
    max_age[0] = 0.0
    assert await catalog.get(shown.job.id) == shown  # the store is older still
    later = job_of("prod", 1, version=4)
    written_by_another_daemon(store, later)
    assert await catalog.get(shown.job.id) == later
