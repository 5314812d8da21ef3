"""Events and the store-wide sequence, on both backends: a real SQLite file, a real PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from probe._store import EventQuery, FencedOut, Store, StoredEvent, StoredJob, open_store

Opener = Callable[[str], Store]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_as(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores as named instances (SQLite: one file, one owner)."""
    if request.param == "postgresql":
        yield request.getfixturevalue("open_pg")
        return
    opened: list[Store] = []

    def open_sqlite(instance: str) -> Store:
        store = open_store(tmp_path / "state.db")
        opened.append(store)
        return store

    yield open_sqlite
    for store in opened:
        store.close()


def job(index: int, version: int = 1, target: str = "prod") -> StoredJob:
    return StoredJob(
        job_id=f"job-{index}",
        namespace="default",
        state="STARTED",
        resource_version=version,
        document=f'{{"index": {index}, "version": {version}}}',
        target=target,
        observed=0,
    )


def event(
    index: int,
    *,
    job_id: str | None = "job-1",
    reason: str = "JOB_RESTARTED",
    at: float = 1000.0,
    target: str = "prod",
    namespace: str = "default",
) -> StoredEvent:
    return StoredEvent(
        event_id=f"event-{index}",
        namespace=namespace,
        job_id=job_id,
        deployment_name="orders" if job_id else None,
        reason=reason,
        created_at=at,
        target=target,
        document=f'{{"index": {index}}}',
    )


def ids(rows: list[StoredEvent] | tuple[Any, ...]) -> list[str]:
    return [row.event_id if isinstance(row, StoredEvent) else row.job_id for row in rows]


def test_a_batch_writes_its_jobs_and_events_under_one_new_number_range(open_as: Opener) -> None:
    store = open_as("a")
    assert store.sequence() == 0

    first = store.write_batch([job(1)], events=[event(1), event(2)])
    second = store.write_batch([job(1, 2), job(2)], events=[event(3)])

    assert (first, second) == (3, 6)
    assert store.sequence() == 6
    changes = store.changes(0, 100)
    assert ids(changes.jobs) == ["job-1", "job-2"]  # each at its newest
    assert [row.seq for row in changes.jobs] == [4, 5]
    assert ids(changes.events) == ["event-1", "event-2", "event-3"]
    assert [row.seq for row in changes.events] == [2, 3, 6]
    assert changes.sequence == 6
    after = store.changes(3, 100)
    assert ids(after.jobs) == ["job-1", "job-2"]
    assert ids(after.events) == ["event-3"]
    assert store.changes(6, 100).jobs == ()
    assert store.changes(6, 100).events == ()


def test_a_page_of_changes_ends_where_a_full_page_may_have_cut(open_as: Opener) -> None:
    """Reading page after page from each page's sequence yields every change once, in order."""
    store = open_as("a")
    for index in range(10):
        store.write_batch([job(index)], events=[event(2 * index), event(2 * index + 1)])
    seen: list[int] = []
    after = 0
    while True:
        page = store.changes(after, 3)
        seen += sorted([row.seq for row in page.jobs] + [row.seq for row in page.events])
        if page.sequence == after:
            break
        after = page.sequence
    assert seen == list(range(1, 31))


def test_an_event_written_again_is_kept_once(open_as: Opener) -> None:
    """A change derived again after a crash carries the same event id."""
    store = open_as("a")
    store.write_batch([job(1)], events=[event(1)])
    store.write_batch([job(1, 2)], events=[event(1), event(2)])

    found = store.events(EventQuery("default"))
    assert ids(found) == ["event-2", "event-1"]


def test_events_are_selected_newest_first_and_paged_by_sequence(open_as: Opener) -> None:
    store = open_as("a")
    store.write_batch(
        [],
        events=[
            event(1, at=100.0),
            event(2, job_id="job-2", at=200.0),
            event(3, reason="JOB_FAILED", at=300.0),
            event(4, job_id=None, reason="TARGET_UNREACHABLE", at=400.0),
            event(5, namespace="other", at=500.0),
        ],
    )

    assert ids(store.events(EventQuery("default"))) == ["event-4", "event-3", "event-2", "event-1"]
    assert ids(store.events(EventQuery("default", job_id="job-1"))) == ["event-3", "event-1"]
    assert ids(store.events(EventQuery("default", reason="JOB_FAILED"))) == ["event-3"]
    assert ids(store.events(EventQuery("default", deployment_name="orders", since=150.0))) == [
        "event-3",
        "event-2",
    ]
    first = store.events(EventQuery("default", limit=2))
    rest = store.events(EventQuery("default", limit=2, before=first[-1].seq))
    assert ids(first) + ids(rest) == ["event-4", "event-3", "event-2", "event-1"]


def test_retention_drops_the_oldest_events_first(open_as: Opener) -> None:
    store = open_as("a")
    store.write_batch(
        [],
        events=[event(index, at=1000.0 + index) for index in range(6)]
        + [event(10, job_id="job-2", at=1.0), event(11, job_id=None, at=2.0)],
    )

    dropped = store.trim_events(older_than=500.0, max_per_job=4, job_ids=["job-1"])

    assert dropped == 4  # two of job-1 past its newest four, and two older than 500 s
    assert ids(store.events(EventQuery("default"))) == [f"event-{i}" for i in (5, 4, 3, 2)]


def test_events_of_a_lease_no_longer_held_are_refused_with_the_batch(open_as: Opener) -> None:
    store = open_as("a")
    [lease] = store.claim(["prod"], 60.0)
    store.release(["prod"])

    with pytest.raises(FencedOut):
        store.write_batch([], {"prod": lease.token}, [event(1)])

    assert store.events(EventQuery("default")) == []


def test_writers_take_numbers_in_the_order_they_commit(
    open_pg: Callable[[str], Store],
) -> None:
    """Two PostgreSQL writers at once: a reader that saw number n has seen every number below."""
    stores = [open_pg("a"), open_pg("b")]
    errors: list[BaseException] = []

    def write(store: Store, offset: int) -> None:
        try:
            for index in range(40):
                store.write_batch([job(offset + index)], events=[event(offset + index)])
        except BaseException as exc:
            errors.append(exc)

    writers = [
        threading.Thread(target=write, args=(store, 1000 * n)) for n, store in enumerate(stores)
    ]
    for writer in writers:
        writer.start()
    reader = stores[0]
    delivered: list[int] = []
    after = 0
    while any(writer.is_alive() for writer in writers) or after < reader.sequence():
        page = reader.changes(after, 1000)
        delivered += [row.seq for row in page.jobs] + [row.seq for row in page.events]
        after = page.sequence
    for writer in writers:
        writer.join()
    assert errors == []
    assert sorted(delivered) == list(range(1, 161))
