"""The event log end to end against the fake Flink kit: what is written, when, and only once.

The API side (filters, paging, watches, the CLI) is tested in test_events_api.py and
test_events_cli.py; these tests check what the daemon writes: the reasons, the root causes,
exactly once across a kill -9, and the retention.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_harness import (
    DaemonHandle,
    DaemonProcess,
    daemon_config,
    dashed,
    restarts_of,
    running_daemon,
    state_of,
    target,
    wait_for,
    wait_until,
    wait_until_sync,
)
from event_log import causes, events_of, reasons, steps

from probe.testing import Endpoint, FakeCluster, FakeFlinkServer, FaultKind, serve_in_thread


async def events_in(daemon: DaemonHandle, job_id: str | None = None) -> list[dict[str, Any]]:
    """``events_of`` a daemon in this event loop (its API is asked from a thread)."""
    return await asyncio.to_thread(events_of, daemon.client, job_id)


async def wait_events(
    daemon: DaemonHandle,
    condition: Callable[[list[dict[str, Any]]], object],
    what: str,
    job_id: str | None = None,
) -> list[dict[str, Any]]:
    return await wait_for(lambda: events_in(daemon, job_id), condition, what)


async def wait_count(daemon: DaemonHandle, job_id: str, count: int) -> None:
    await daemon.wait_job(job_id, lambda job: restarts_of(job) == count, f"count {count}")


async def test_restarts_and_a_failover_tell_why_and_a_quiet_job_is_never_asked(
    tmp_path: Path,
) -> None:
    cluster = FakeCluster()
    async with FakeFlinkServer(cluster) as server:
        jid = cluster.submit("orders")
        job_id = dashed(jid)
        config = daemon_config(tmp_path / "state.db", [target("prod", server.url)])
        async with running_daemon(config) as daemon:
            await daemon.wait_job(job_id, lambda job: state_of(job) == "STARTED", "STARTED")
            rounds = cluster.requests(Endpoint.OVERVIEW)
            await wait_until(
                lambda: asyncio.sleep(0, cluster.requests(Endpoint.OVERVIEW) >= rounds + 10),
                "ten quiet rounds",
            )
            assert cluster.requests(Endpoint.EXCEPTIONS) == 0

            for n in (1, 2, 3):
                cluster.restart(jid, message=f"boom {n}")
                await wait_count(daemon, job_id, n)
            start_before = cluster.job(jid).start_time
            cluster.jobmanager_restart()
            await wait_count(daemon, job_id, 4)

            events = await events_in(daemon, job_id)
            metrics = await daemon.metrics()

    assert reasons(events) == [
        "JOB_STARTING",
        "JOB_STARTED",
        "JOB_RESTARTED",
        "JOB_RESTARTED",
        "JOB_RESTARTED",
        "JOBMANAGER_FAILOVER",
        "JOB_RESTARTED",
    ]
    assert steps(events) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    # Flink's history is empty after the failover; the causes seen before it are kept.
    assert causes(events) == ["boom 1", "boom 2", "boom 3"]
    assert all(event["spec"]["flinkJobId"] == jid for event in events)
    failover = events[5]["spec"]["details"]
    assert failover["oldStartTime"] == start_before
    assert failover["newStartTime"] == cluster.job(jid).start_time
    assert (
        metrics.value("flink_probe_events_total", namespace="default", reason="JOB_RESTARTED") == 4
    )
    sequence = [event["metadata"]["resourceVersion"] for event in events]
    assert sequence == sorted(sequence)


async def test_a_target_that_stops_answering_and_comes_back_is_told(tmp_path: Path) -> None:
    cluster = FakeCluster()
    async with FakeFlinkServer(cluster) as server:
        config = daemon_config(tmp_path / "state.db", [target("prod", server.url)])
        async with running_daemon(config) as daemon:
            cluster.set_fault(Endpoint.OVERVIEW, FaultKind.HTTP_500)
            await wait_events(daemon, lambda e: reasons(e) == ["TARGET_UNREACHABLE"], "down")
            cluster.clear_fault(Endpoint.OVERVIEW)
            events = await wait_events(
                daemon, lambda e: reasons(e)[-1:] == ["TARGET_REACHABLE"], "back"
            )

    assert reasons(events) == ["TARGET_UNREACHABLE", "TARGET_REACHABLE"]
    down = events[0]
    assert down["metadata"]["jobId"] is None
    assert down["spec"]["details"]["target"] == "prod"
    assert "500" in down["spec"]["details"]["error"]


async def test_a_job_keeps_its_newest_events_and_the_drops_are_counted(tmp_path: Path) -> None:
    cluster = FakeCluster()
    async with FakeFlinkServer(cluster) as server:
        jid = cluster.submit("orders")
        job_id = dashed(jid)
        config = daemon_config(tmp_path / "state.db", [target("prod", server.url)])
        config["events"] = {"max_per_job": 3}
        async with running_daemon(config) as daemon:
            for n in (1, 2, 3, 4):
                cluster.restart(jid, message=f"boom {n}")
                await wait_count(daemon, job_id, n)
            events = await wait_events(daemon, lambda e: len(e) == 3, "three kept", job_id)
            metrics = await daemon.metrics()

    assert steps(events) == [(1, 2), (2, 3), (3, 4)]
    assert metrics.value("flink_probe_events_dropped_total") == 3  # STARTING, STARTED, 0 -> 1


def test_a_daemon_killed_again_and_again_loses_and_repeats_no_event(tmp_path: Path) -> None:
    """kill -9 while restarts are being counted, three times: each restart's event is there
    once, the count stepping by one from 0 to Flink's."""
    cluster = FakeCluster()
    with serve_in_thread(cluster) as server:
        jid = cluster.submit("orders")
        job_id = dashed(jid)
        config = daemon_config(
            tmp_path / "state.db", [target("prod", server.url)], interval="100ms", timeout="100ms"
        )
        daemon = DaemonProcess(config, tmp_path / "config.yaml")
        try:
            daemon.wait_healthy()
            for _ in range(3):
                for _ in range(3):
                    cluster.restart(jid, message=f"boom {cluster.job(jid).num_restarts + 1}")
                    time.sleep(0.15)  # a restart every round and a half: each counted alone
                daemon.kill()
                daemon = DaemonProcess(config, tmp_path / "config.yaml")
                daemon.wait_healthy()
            final = cluster.job(jid).num_restarts
            wait_until_sync(
                lambda: restarts_of(daemon.client.job(job_id)) == final, f"count {final}"
            )
            events = events_of(daemon.client, job_id)
        finally:
            daemon.kill()

    ids = [event["metadata"]["id"] for event in events]
    assert len(ids) == len(set(ids))
    assert reasons(events)[:2] == ["JOB_STARTING", "JOB_STARTED"]
    chain = steps(events)
    assert chain[0][0] == 0
    assert chain[-1][1] == final == 9
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chain)), chain
    assert sorted(set(causes(events))) == sorted(f"boom {n}" for n in range(1, 10))
    assert len(causes(events)) == 9
