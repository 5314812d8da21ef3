"""The event list, the Job list's filters, and the watches of both, as clients use them.

One daemon for most of the module (in this event loop, heartbeats every few tenths of a
second), watching a fake cluster with a running, a failed and a finished job, and a second
target in namespace team-a. The watches are read with aiohttp, line by line, as a Kubernetes
client reads them; the limits (max_watches, a reader that takes nothing, shutdown) get daemons
of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from daemon_harness import (
    DEFAULT_WAIT,
    DaemonHandle,
    ProbeClient,
    daemon_config,
    dashed,
    running_daemon,
    target,
    wait_for,
)
from fleet import Fleet
from postgres_cluster import Database, PostgresCluster

from probe._core.events import Reason, target_event
from probe._runtime.book import event_row
from probe._store import open_store
from probe._web.watch import Watches
from probe.testing import FakeCluster, FakeFlinkServer, serve_in_thread

pytestmark = pytest.mark.asyncio(loop_scope="module")

HEARTBEAT = 0.3
"""Seconds of silence before a watch sends a BOOKMARK, in these tests."""
EVENTS = "/api/v1/namespaces/default/events"
JOBS = "/api/v1/namespaces/default/jobs"


@dataclass
class Served:
    handle: DaemonHandle
    cluster: FakeCluster
    jids: dict[str, str]
    """Flink job ids by deployment name."""

    def job_id(self, name: str) -> str:
        return dashed(self.jids[name])


def reasons_by_deployment(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for event in events:
        metadata = event["metadata"]
        found.setdefault(metadata["deploymentName"], set()).add(metadata["name"])
    return found


async def answer(handle: DaemonHandle | ProbeClient, path: str, **query: object) -> Any:
    """The JSON body of a 200 answer to GET `path?query`."""
    client = handle.client if isinstance(handle, DaemonHandle) else handle
    url = f"{path}?{urllib.parse.urlencode(query)}" if query else path
    got = await asyncio.to_thread(client.request, url)
    assert got.status == 200, got
    assert got.content_type.startswith("application/json"), got
    return got.json()


async def all_events(handle: DaemonHandle | ProbeClient, **query: object) -> Any:
    """The default namespace's EventList of up to 1000 events (every one, in these tests)."""
    return await answer(handle, EVENTS, limit=1000, **query)


async def wait_events(
    handle: DaemonHandle | ProbeClient,
    condition: Callable[[list[dict[str, Any]]], object],
    what: str,
) -> list[dict[str, Any]]:
    async def items() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = (await all_events(handle))["items"]
        return events

    return await wait_for(items, condition, what)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Watches, "heartbeat", HEARTBEAT)
        cluster = FakeCluster()
        jids = {name: cluster.submit(name) for name in ("orders", "broken", "nightly")}
        cluster.fail(jids["broken"], "the input topic does not exist")
        cluster.finish(jids["nightly"])
        elsewhere = FakeCluster()
        elsewhere.submit("ingest")
        state = tmp_path_factory.mktemp("events-api") / "flink-probe.db"
        async with FakeFlinkServer(cluster) as flink, FakeFlinkServer(elsewhere) as other:
            config = daemon_config(
                state, [target("prod", flink.url), target("other", other.url, namespace="team-a")]
            )
            async with running_daemon(config) as handle:
                await wait_events(
                    handle,
                    lambda events: (
                        {"JOB_STARTING", "JOB_STARTED"}
                        <= reasons_by_deployment(events).get("orders", set())
                        and "JOB_FAILED" in reasons_by_deployment(events).get("broken", ())
                        and "JOB_FINISHED" in reasons_by_deployment(events).get("nightly", ())
                    ),
                    "the events of a started, a failed and a finished Job",
                )
                yield Served(handle, cluster, jids)


# -- lists -------------------------------------------------------------------------------


async def test_the_event_list_is_newest_first_in_the_namespace(served: Served) -> None:
    body = await all_events(served.handle)
    assert (body["apiVersion"], body["kind"]) == ("v1", "EventList")
    assert body["metadata"]["continue"] is None
    items = body["items"]
    versions = [event["metadata"]["resourceVersion"] for event in items]
    assert versions == sorted(versions, reverse=True)
    assert len(set(versions)) == len(versions)
    assert body["metadata"]["resourceVersion"] >= versions[0]
    for event in items:
        assert (event["apiVersion"], event["kind"]) == ("v1", "Event")
        assert event["metadata"]["namespace"] == "default"
        assert set(event["spec"]) == {"message", "flinkJobId", "details"}
    assert set(reasons_by_deployment(items)) == {"orders", "broken", "nightly"}

    elsewhere = (await answer(served.handle, "/api/v1/namespaces/team-a/events"))["items"]
    assert set(reasons_by_deployment(elsewhere)) == {"ingest"}
    assert {event["metadata"]["namespace"] for event in elsewhere} == {"team-a"}


async def assert_selects(
    served: Served, predicate: Callable[[dict[str, Any]], bool], **query: object
) -> list[dict[str, Any]]:
    """The events `query` selects are those of the whole list for which `predicate` holds, as
    of the filtered list's resourceVersion; returns them (never none)."""
    selected = await all_events(served.handle, **query)
    everything = (await all_events(served.handle))["items"]
    as_of = selected["metadata"]["resourceVersion"]
    expected = [e for e in everything if e["metadata"]["resourceVersion"] <= as_of]
    assert selected["items"] == [e for e in expected if predicate(e)], query
    assert selected["items"], query
    items: list[dict[str, Any]] = selected["items"]
    return items


async def test_the_event_list_filters(served: Served) -> None:
    orders = served.job_id("orders")
    for job_id in (orders, served.jids["orders"]):  # dashed, or 32 hex digits
        await assert_selects(served, lambda e: e["metadata"]["jobId"] == orders, jobId=job_id)
    await assert_selects(
        served, lambda e: e["metadata"]["deploymentName"] == "broken", deploymentName="broken"
    )
    [failed] = await assert_selects(
        served, lambda e: e["metadata"]["name"] == "JOB_FAILED", reason="JOB_FAILED"
    )
    assert failed["metadata"]["deploymentName"] == "broken"
    assert "the input topic does not exist" in failed["spec"]["details"]["message"]

    times = sorted({e["metadata"]["createdAt"] for e in (await all_events(served.handle))["items"]})
    since = times[len(times) // 2]
    await assert_selects(served, lambda e: e["metadata"]["createdAt"] >= since, since=since)
    # The same instant in another offset.
    shifted = await all_events(served.handle, since="2999-01-01T02:00:00+02:00")
    assert shifted["items"] == []


async def test_the_job_list_filters_and_carries_the_sequence(served: Served) -> None:
    events = await all_events(served.handle)
    body = await answer(served.handle, JOBS)
    assert body["kind"] == "JobList"
    assert body["metadata"]["resourceVersion"] >= events["metadata"]["resourceVersion"]

    [orders] = (await answer(served.handle, JOBS, deploymentName="orders"))["items"]
    assert orders["metadata"]["id"] == served.job_id("orders")
    failed = (await answer(served.handle, JOBS, state="FAILED"))["items"]
    assert [job["metadata"]["deploymentName"] for job in failed] == ["broken"]
    both = await answer(served.handle, JOBS, state="FINISHED", deploymentName="nightly")
    assert [job["metadata"]["deploymentName"] for job in both["items"]] == ["nightly"]
    assert not (await answer(served.handle, JOBS, state="FINISHED", deploymentName="orders"))[
        "items"
    ]


@pytest.mark.parametrize(
    ("path", "query", "named"),
    [
        (EVENTS, "reason=RESTARTED", "reason"),
        (EVENTS, "since=yesterday", "since"),
        (EVENTS, "since=2026-13-01T00:00:00Z", "since"),
        (EVENTS, "since=2026-06-01T12:00:00", "since"),
        (EVENTS, "limit=0", "limit"),
        (EVENTS, "limit=1001", "limit"),
        (EVENTS, "limit=ten", "limit"),
        (EVENTS, "continue=next", "continue"),
        (EVENTS, "jobId=not-a-uuid", "jobId"),
        (EVENTS, "jobId=%7B" + "0" * 32 + "%7D", "jobId"),
        (JOBS, "state=RUNNING", "state"),
        (JOBS, "watch=yes", "watch"),
        (JOBS, "watch=true&resourceVersion=-1", "resourceVersion"),
        (EVENTS, "watch=true&resourceVersion=latest", "resourceVersion"),
        (EVENTS, "watch=true&timeoutSeconds=0", "timeoutSeconds"),
    ],
)
async def test_a_wrong_parameter_is_400_with_one_line(
    served: Served, path: str, query: str, named: str
) -> None:
    got = await served.handle.request(f"{path}?{query}")
    assert got.status == 400, got
    assert got.content_type.startswith("application/json")
    error = got.json()["error"]
    assert error["code"] == 400
    assert error["message"].startswith(f"{named}: ")
    assert "\n" not in error["message"]


async def test_pages_cover_every_event_once_as_of_the_first(served: Served) -> None:
    """`continue` pages through the events as they were at the first page: an event
    committed meanwhile is on no page (a watch from the first page's resourceVersion sends
    it)."""
    first = await answer(served.handle, EVENTS, limit=2)
    version = first["metadata"]["resourceVersion"]
    restarts = await restarts_of_orders(served)
    served.cluster.restart(served.jids["orders"])
    await wait_events(
        served.handle,
        lambda events: any(
            event["metadata"]["resourceVersion"] > version
            and event["metadata"]["name"] == "JOB_RESTARTED"
            for event in events
        ),
        "a restart after the first page",
    )
    assert await restarts_of_orders(served) > restarts

    pages = [first]
    while pages[-1]["metadata"]["continue"] is not None:
        token = pages[-1]["metadata"]["continue"]
        pages.append(await answer(served.handle, EVENTS, limit=2, **{"continue": token}))
    assert all(len(page["items"]) <= 2 for page in pages)
    paged = [event for page in pages for event in page["items"]]
    everything = (await all_events(served.handle))["items"]
    assert paged == [e for e in everything if e["metadata"]["resourceVersion"] <= version]
    assert len(pages) >= 3


async def restarts_of_orders(served: Served) -> int:
    job = await served.handle.job(served.job_id("orders"))
    assert job is not None
    return int(job["status"]["started"]["observedFlinkJobRestarts"])


# -- watches -----------------------------------------------------------------------------


@dataclass
class Stream:
    """A watch as a client reads it: the lines so far."""

    response: aiohttp.ClientResponse
    lines: list[dict[str, Any]] = field(default_factory=list)

    async def read_until(
        self, condition: Callable[[list[dict[str, Any]]], object], what: str
    ) -> list[dict[str, Any]]:
        """The lines read, once `condition` holds for them; fails after a deadline."""
        deadline = time.monotonic() + DEFAULT_WAIT
        while not condition(self.lines):
            left = deadline - time.monotonic()
            try:
                line = await asyncio.wait_for(self.response.content.readline(), max(left, 0))
            except TimeoutError:
                raise AssertionError(f"no {what} within {DEFAULT_WAIT} s: {self.lines}") from None
            if not line:
                raise AssertionError(f"the stream ended before {what}: {self.lines}")
            self.lines.append(json.loads(line))
        return self.lines

    def changes(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["type"] != "BOOKMARK"]

    def bookmarks(self) -> list[int]:
        return [
            line["object"]["metadata"]["resourceVersion"]
            for line in self.lines
            if line["type"] == "BOOKMARK"
        ]


@contextlib.asynccontextmanager
async def watching(
    handle: DaemonHandle | ProbeClient, path: str, **query: object
) -> AsyncIterator[Stream]:
    client = handle.client if isinstance(handle, DaemonHandle) else handle
    url = f"{client.base_url}{path}?{urllib.parse.urlencode({'watch': 'true', **query})}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as response,
    ):
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "application/x-ndjson"
        yield Stream(response)


def versions(events: list[dict[str, Any]]) -> list[int]:
    return [event["metadata"]["resourceVersion"] for event in events]


async def test_a_resumed_event_watch_sees_every_later_event_once(served: Served) -> None:
    """From a list's resourceVersion, then again from the last bookmark read: every event
    committed after the list comes once, in commit order, and none before it."""
    version = (await all_events(served.handle))["metadata"]["resourceVersion"]
    orders = served.jids["orders"]
    async with watching(served.handle, EVENTS, resourceVersion=version) as first:
        served.cluster.restart(orders)
        await first.read_until(
            lambda lines: bool(lines) and lines[-1]["type"] == "BOOKMARK" and first.changes(),
            "a restart's event and the bookmark after it",
        )
    resume_from = first.bookmarks()[-1]

    # While nobody watches: another restart, and a new Job (JOB_STARTING, JOB_STARTED).
    served.cluster.restart(orders)
    late = dashed(served.cluster.submit("late"))
    await wait_events(
        served.handle,
        lambda events: (
            "JOB_STARTED" in reasons_by_deployment(events).get("late", ())
            and any(
                event["metadata"]["name"] == "JOB_RESTARTED"
                and event["metadata"]["resourceVersion"] > resume_from
                for event in events
            )
        ),
        "a restart and a new Job while no one watches",
    )
    target_version = (await all_events(served.handle))["metadata"]["resourceVersion"]
    async with watching(served.handle, EVENTS, resourceVersion=resume_from) as second:
        await second.read_until(
            lambda lines: any(version >= target_version for version in second.bookmarks()),
            "every event up to the list's",
        )

    changes = first.changes() + second.changes()
    assert {line["type"] for line in changes} == {"ADDED"}
    received = [line["object"] for line in changes]
    until = second.bookmarks()[-1]
    everything = (await all_events(served.handle))["items"][::-1]
    assert received == [
        e for e in everything if version < e["metadata"]["resourceVersion"] <= until
    ]
    assert {"JOB_STARTING", "JOB_STARTED"} <= {
        event["metadata"]["name"] for event in received if event["metadata"]["jobId"] == late
    }
    assert len([e for e in received if e["metadata"]["name"] == "JOB_RESTARTED"]) >= 2


async def test_an_event_watch_is_filtered_and_heartbeats(served: Served) -> None:
    version = (await all_events(served.handle))["metadata"]["resourceVersion"]
    async with watching(
        served.handle, EVENTS, resourceVersion=version, reason="JOB_RESTARTED"
    ) as stream:
        served.cluster.restart(served.jids["orders"])
        served.cluster.fail(served.cluster.submit("doomed"), "no more restarts")
        await wait_events(
            served.handle,
            lambda events: "JOB_FAILED" in reasons_by_deployment(events).get("doomed", ()),
            "a Job that failed",
        )
        until = (await all_events(served.handle))["metadata"]["resourceVersion"]

        def heartbeats_after_everything(lines: list[dict[str, Any]]) -> bool:
            quiet = [line for line in lines if line["type"] == "BOOKMARK"]
            versions = [line["object"]["metadata"]["resourceVersion"] for line in quiet]
            return len([v for v in versions if v >= until]) >= 2

        await stream.read_until(heartbeats_after_everything, "heartbeats after the changes")
    assert {line["object"]["metadata"]["name"] for line in stream.changes()} == {"JOB_RESTARTED"}
    assert stream.bookmarks() == sorted(stream.bookmarks())
    last = stream.lines[-1]["object"]
    assert (last["kind"], set(last["metadata"])) == ("Event", {"resourceVersion"})


def job_lines(stream: Stream, job_id: str) -> list[dict[str, Any]]:
    return [line for line in stream.changes() if line["object"]["metadata"]["id"] == job_id]


async def test_a_job_watch_adds_new_jobs_and_modifies_others(served: Served) -> None:
    version = (await answer(served.handle, JOBS))["metadata"]["resourceVersion"]
    orders = served.job_id("orders")
    restarts = await restarts_of_orders(served)
    async with watching(served.handle, JOBS, resourceVersion=version) as stream:
        fresh = dashed(served.cluster.submit("fresh"))
        served.cluster.restart(served.jids["orders"])
        await stream.read_until(
            lambda lines: (
                any(
                    line["object"]["status"]["state"] == "STARTED"
                    for line in job_lines(stream, fresh)
                )
                and any(
                    line["object"]["status"]["started"]["observedFlinkJobRestarts"] > restarts
                    for line in job_lines(stream, orders)
                )
            ),
            "the new Job started, and the other's restart",
        )
    first, *later = [line["type"] for line in job_lines(stream, fresh)]
    assert (first, set(later) - {"MODIFIED"}) == ("ADDED", set())
    assert {line["type"] for line in job_lines(stream, orders)} == {"MODIFIED"}
    assert {line["object"]["kind"] for line in stream.lines} == {"Job"}


async def test_a_job_watch_from_0_adds_every_job_once_then_modifies(served: Served) -> None:
    restarts = await restarts_of_orders(served)
    async with watching(served.handle, JOBS, deploymentName="orders") as stream:
        await stream.read_until(lambda lines: bool(stream.bookmarks()), "the Jobs as they are")
        served.cluster.restart(served.jids["orders"])
        await stream.read_until(
            lambda lines: any(
                line["type"] == "MODIFIED"
                and line["object"]["status"]["started"]["observedFlinkJobRestarts"] > restarts
                for line in stream.changes()
            ),
            "the restart",
        )
    kinds = [
        (line["type"], line["object"]["metadata"]["deploymentName"]) for line in stream.changes()
    ]
    assert kinds[0] == ("ADDED", "orders")
    assert set(kinds[1:]) == {("MODIFIED", "orders")}


# -- limits ------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def quiet_daemon(tmp_path: Path) -> AsyncIterator[DaemonHandle]:
    """A daemon of its own with one running Job and `server.max_watches: 2`; heartbeats every
    HEARTBEAT seconds, a reader that takes nothing for a second is disconnected."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Watches, "heartbeat", HEARTBEAT)
        patch.setattr(Watches, "write_timeout", 1.0)
        cluster = FakeCluster()
        cluster.submit("orders")
        async with FakeFlinkServer(cluster) as flink:
            config = daemon_config(tmp_path / "flink-probe.db", [target("prod", flink.url)])
            config["server"]["max_watches"] = 2
            async with running_daemon(config) as handle:
                yield handle


async def test_watches_past_max_watches_are_429_until_one_ends(
    quiet_daemon: DaemonHandle,
) -> None:
    async with watching(quiet_daemon, EVENTS), watching(quiet_daemon, JOBS) as jobs:
        await jobs.read_until(lambda lines: bool(jobs.bookmarks()), "a bookmark")
        refused = await quiet_daemon.request(f"{EVENTS}?watch=true&timeoutSeconds=1")
        assert refused.status == 429
        assert refused.json()["error"]["message"].startswith("server.max_watches")
        # A list is no watch: it is answered.
        assert (await quiet_daemon.request(EVENTS)).status == 200

    async def accepted() -> int:
        got = await quiet_daemon.request(f"{EVENTS}?watch=true&timeoutSeconds=0.1")
        return got.status

    # The daemon notices a client left at its next write (a heartbeat at the latest).
    await wait_for(accepted, lambda status: status == 200, "a watch accepted again")


def reset_peak_memory() -> None:
    """Start this process's peak resident memory (VmHWM) afresh (Linux's clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib() -> float:
    """The most memory this process (the daemon's, here) held resident since the reset."""
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    assert match is not None, status
    return int(match[1]) / 1024


def stored_events(path: Path, count: int, size: int) -> int:
    """`count` target events of about `size` bytes each in a new store; returns the bytes."""
    now = time.time()
    rows = [
        event_row(
            target_event(
                Reason.TARGET_UNREACHABLE,
                target="prod",
                namespace="default",
                deployment_name=None,
                at=now - 60 + i / 1000,
                error="x" * size,
            ),
            "prod",
        )
        for i in range(count)
    ]
    store = open_store(path)
    try:
        store.write_batch([], None, rows)
    finally:
        store.close()
    return sum(len(row.document) for row in rows)


async def test_a_reader_that_takes_nothing_is_disconnected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch from 0 of 24 MB of stored events by a client that reads nothing: the daemon
    sends what the sockets take, waits a second more, and drops the connection, holding no
    more than a batch meanwhile; the watch slot is free again."""
    monkeypatch.setattr(Watches, "write_timeout", 1.0)
    monkeypatch.setattr(Watches, "batch", 20)
    state = tmp_path / "flink-probe.db"
    total = stored_events(state, 1500, 16_000)
    async with FakeFlinkServer(FakeCluster()) as flink:
        config = daemon_config(state, [target("prod", flink.url)])
        config["server"]["max_watches"] = 1
        async with running_daemon(config) as handle:
            reset_peak_memory()
            before = peak_memory_mib()
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            port = handle.daemon.bound_port
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
            try:
                writer.write(f"GET {EVENTS}?watch=true HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert (await reader.readline()).startswith(b"HTTP/1.1 200")

                listed = (await handle.request(f"{EVENTS}?limit=1")).json()["metadata"][
                    "resourceVersion"
                ]

                async def watch_answer() -> int:
                    """A watch of what comes next (nothing): 429 while the slot is taken."""
                    query = f"watch=true&resourceVersion={listed}&timeoutSeconds=0.1"
                    return (await handle.request(f"{EVENTS}?{query}")).status

                assert await watch_answer() == 429, "the stuck reader holds the only slot"
                await wait_for(watch_answer, lambda status: status == 200, "the reader dropped")
                grown = peak_memory_mib() - before
                received = 0
                with contextlib.suppress(ConnectionError):
                    while chunk := await asyncio.wait_for(reader.read(1 << 20), DEFAULT_WAIT):
                        received += len(chunk)
            finally:
                writer.close()
    assert received < total / 2, "the stream was cut short"
    assert grown < 15, f"the daemon's memory grew by {grown:.0f} MiB"


async def test_a_shutdown_ends_open_watches_at_once(tmp_path: Path) -> None:
    """SIGTERM's shutdown with a watch open: the stream ends cleanly and the daemon exits
    within its usual time (the server would wait a minute for an open request)."""
    cluster = FakeCluster()
    cluster.submit("orders")
    async with FakeFlinkServer(cluster) as flink:
        config = daemon_config(tmp_path / "flink-probe.db", [target("prod", flink.url)])
        async with (
            running_daemon(config, stop_timeout=5.0) as handle,
            watching(handle, JOBS) as stream,
        ):
            await stream.read_until(lambda lines: bool(lines), "the Jobs as they are")
            handle.daemon.should_exit.set()
            assert await asyncio.wait_for(handle.task, 5.0) == 0
            # The stream ended with its last chunk: the client reads to its end, no error.
            rest = await asyncio.wait_for(stream.response.content.read(), 5.0)
            assert all(json.loads(line) for line in rest.splitlines())


async def test_on_postgresql_a_watch_resumes_on_another_replica_and_ends_with_the_store(
    tmp_path: Path, postgres_database: Database, postgres_cluster: PostgresCluster
) -> None:
    """The sequence is the database's: a watch of one replica resumes on another, exactly
    once. While PostgreSQL is down, a list answers 503 with one line and an open watch ends;
    both work again once it is back."""
    fake = FakeCluster()
    orders = fake.submit("orders")
    with serve_in_thread(fake) as flink, Fleet(tmp_path, postgres_database, 0.4, 1.2) as fleet:
        replicas = [
            await asyncio.to_thread(fleet.start, name, [target("prod", flink.url)])
            for name in ("a", "b")
        ]
        a, b = (replica.process.client for replica in replicas)
        await wait_events(
            a,
            lambda events: "JOB_STARTED" in reasons_by_deployment(events).get("orders", ()),
            "the Job started",
        )
        version = (await all_events(a))["metadata"]["resourceVersion"]
        async with watching(a, EVENTS, resourceVersion=version) as first:
            fake.restart(orders)
            await first.read_until(
                lambda lines: first.changes() and lines[-1]["type"] == "BOOKMARK",
                "the restart, and the bookmark after it",
            )
        resume_from = first.bookmarks()[-1]
        fake.restart(orders)
        later = await wait_events(
            b,
            lambda events: max(versions(events)) > resume_from,
            "the next restart, through the other replica",
        )
        async with watching(b, EVENTS, resourceVersion=resume_from) as second:
            await second.read_until(
                lambda lines: any(v >= max(versions(later)) for v in second.bookmarks()),
                "the other replica's stream to catch up",
            )
        received = [line["object"] for line in first.changes() + second.changes()]
        until = second.bookmarks()[-1]
        everything = (await all_events(b))["items"][::-1]
        assert received == [
            e for e in everything if version < e["metadata"]["resourceVersion"] <= until
        ]
        assert [e["metadata"]["name"] for e in received].count("JOB_RESTARTED") == 2

        async def listed() -> tuple[int, str]:
            got = await asyncio.to_thread(b.request, EVENTS)
            return got.status, got.json()["error"]["message"] if got.status >= 400 else ""

        async with watching(b, EVENTS, resourceVersion=until) as open_watch:
            await asyncio.to_thread(postgres_cluster.stop)
            try:
                _, message = await wait_for(listed, lambda got: got[0] == 503, "a 503")
                assert message.startswith("the state store cannot be read: ")
                assert "\n" not in message
                rest = await asyncio.wait_for(open_watch.response.content.read(), DEFAULT_WAIT)
                assert all(json.loads(line) for line in rest.splitlines())
            finally:
                await asyncio.to_thread(postgres_cluster.start)
        await wait_for(listed, lambda got: got[0] == 200, "the list again")
