"""The daemon end to end, in this process, against fake Flink clusters on real sockets.

Each test runs a whole daemon (scheduler, store, HTTP server) with probe rounds five times a
second, scripts the fake cluster, and checks what a user sees: the Job API and `/metrics`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from daemon_harness import (
    DaemonHandle,
    Metrics,
    daemon_config,
    dashed,
    flink_status_of,
    free_port,
    restarts_of,
    running_daemon,
    sampling,
    started_of,
    state_of,
    static_job,
    target,
    wait_for,
    wait_until,
)

from probe.testing import Endpoint, FakeCluster, FakeFlinkServer, Fault, FaultKind


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def last_update(job: dict[str, Any] | None) -> str:
    """The Job's ``lastUpdateTime``; the Job must be STARTED."""
    started = started_of(job)
    assert started is not None
    return str(started["lastUpdateTime"])


def probed_after(job: dict[str, Any] | None, moment: float) -> bool:
    """Whether the Job's last completed probe ended after `moment` (Unix time)."""
    started = started_of(job)
    return started is not None and parse_time(started["lastUpdateTime"]).timestamp() > moment


async def probe_rounds(cluster: FakeCluster, rounds: int) -> None:
    """Wait until the daemon has asked `cluster` for its overview `rounds` more times."""
    target_count = cluster.requests(Endpoint.OVERVIEW) + rounds

    async def asked() -> int | None:
        count = cluster.requests(Endpoint.OVERVIEW)
        return count if count >= target_count else None

    await wait_until(asked, f"{rounds} more overview requests")


def counted_at_least(count: int) -> Callable[[dict[str, Any] | None], bool]:
    return lambda job: (restarts_of(job) or 0) >= count


def job_series(metrics: Metrics, name: str, job_id: str, **labels: str) -> list[Any]:
    return metrics.series(name, job_id=job_id, **labels)


# -- discovery and counting ----------------------------------------------------------------


async def test_discovery_creates_a_job_for_every_flink_job(
    fake_flink: FakeFlinkServer, state_path: Path
) -> None:
    cluster = fake_flink.cluster
    orders = cluster.submit("orders")
    nightly = cluster.submit("nightly-report")
    cluster.finish(nightly)
    config = daemon_config(state_path, [target("prod", fake_flink.url, namespace="team-a")])

    async with running_daemon(config) as daemon:
        job = await daemon.wait_state(
            dashed(orders), "STARTED", flink_status="RUNNING", namespace="team-a"
        )
        assert job["metadata"]["id"] == dashed(orders)
        assert job["metadata"]["namespace"] == "team-a"
        assert job["metadata"]["deploymentName"] == "orders"
        assert job["metadata"]["annotations"]["flink-probe/target"] == "prod"
        assert job["spec"]["target"] == "prod"
        started = started_of(job)
        assert started is not None
        assert started["flinkJobId"] == orders
        assert started["observedFlinkJobStatus"] == "RUNNING"

        # A job already final when first seen is recorded as history, through the legal path.
        history = await daemon.wait_state(dashed(nightly), "FINISHED", namespace="team-a")
        assert history["metadata"]["terminatedAt"] is not None
        assert flink_status_of(history) == "FINISHED"

        # A job submitted while the daemon runs is picked up by the next round.
        payments = cluster.submit("payments")
        late = await daemon.wait_state(dashed(payments), "STARTED", namespace="team-a")
        assert late["metadata"]["deploymentName"] == "payments"

        metrics = await daemon.metrics()
        assert (
            metrics.value(
                "flink_probe_job_state",
                job_id=dashed(orders),
                state="STARTED",
                namespace="team-a",
                deployment="orders",
                flink_job_id=orders,
                target="prod",
            )
            == 1.0
        )
        assert await daemon.jobs("default") == []


async def test_two_targets_showing_one_cluster_discover_each_job_once(
    fake_flink: FakeFlinkServer, state_path: Path
) -> None:
    """Both first rounds run at once; a job is a Job of whichever target claimed it first,
    never re-created under the other (which would move it to another namespace)."""
    orders = fake_flink.cluster.submit("orders")
    config = daemon_config(
        state_path,
        [
            target("one", fake_flink.url, namespace="team-one"),
            target("two", fake_flink.url, namespace="team-two"),
        ],
    )
    with structlog.testing.capture_logs() as logs:
        async with running_daemon(config) as daemon:
            await _probed_by_both(daemon, dashed(orders))
    discovered = [e for e in logs if e["event"] == "job discovered"]
    assert [e["job_id"] for e in discovered] == [dashed(orders)], discovered


async def _probed_by_both(daemon: DaemonHandle, job_id: str) -> None:
    """Wait until the Job was probed over several rounds; it exists in one namespace only."""

    async def copies() -> list[dict[str, Any]]:
        return [
            job
            for namespace in ("team-one", "team-two")
            for job in await daemon.jobs(namespace)
            if job["metadata"]["id"] == job_id
        ]

    discovered = await wait_for(copies, bool, "the job discovered")
    await daemon.wait_probed(job_id, rounds=5, namespace=discovered[0]["metadata"]["namespace"])
    seen = await copies()
    assert len(seen) == 1, [job["metadata"]["namespace"] for job in seen]


async def test_restarts_are_counted_exactly(fake_flink: FakeFlinkServer, state_path: Path) -> None:
    cluster = fake_flink.cluster
    orders = cluster.submit("orders")
    cluster.restart(orders, n=2)  # before the daemon runs: a discovered job starts from here
    batch = cluster.submit("batch")
    config = daemon_config(state_path, [target("prod", fake_flink.url)])

    async with running_daemon(config) as daemon:
        await daemon.wait_restarts(dashed(orders), 2)
        await daemon.wait_state(dashed(batch), "STARTED")
        cluster.restart(orders)
        await daemon.wait_restarts(dashed(orders), 3)
        cluster.restart(orders, n=4)
        # A job that restarts and finishes at once keeps the restart it ended with.
        cluster.restart(batch)
        cluster.finish(batch)

        await daemon.wait_restarts(dashed(orders), 7)
        finished = await daemon.wait_job(
            dashed(batch),
            lambda j: state_of(j) == "FINISHED" and restarts_of(j) == 1,
            "FINISHED with 1 restart",
        )
        assert finished["metadata"]["terminatedAt"] is not None

        # The count has settled: more rounds change nothing.
        assert restarts_of(await daemon.wait_probed(dashed(orders), rounds=3)) == 7
        metrics = await daemon.metrics()
        assert metrics.value("flink_probe_job_restarts_total", job_id=dashed(orders)) == 7
        assert metrics.value("flink_probe_job_restarts_total", job_id=dashed(batch)) == 1
        assert restarts_of(await daemon.job(dashed(batch))) == 1


async def test_a_quiet_job_is_asked_numrestarts_again_only_when_its_overview_moves(
    fake_flink: FakeFlinkServer, state_path: Path
) -> None:
    """Once a read from after the job's last change has answered, rounds ask the overview
    alone; a restart moves last-modification, the job is read again and the restart counted."""
    cluster = fake_flink.cluster
    orders = cluster.submit("orders")
    cluster.restart(orders, n=2)
    config = daemon_config(state_path, [target("prod", fake_flink.url)])

    async with running_daemon(config) as daemon:
        await daemon.wait_restarts(dashed(orders), 2)
        await _rounds_without_reads(cluster, rounds=5)
        reads = cluster.requests(Endpoint.METRICS)
        cluster.restart(orders)
        await daemon.wait_restarts(dashed(orders), 3)
        assert cluster.requests(Endpoint.METRICS) > reads
        await _rounds_without_reads(cluster, rounds=5)
        assert restarts_of(await daemon.job(dashed(orders))) == 3


async def test_a_quiet_job_shows_each_probe_but_is_stored_only_when_it_changes(
    fake_flink: FakeFlinkServer, state_path: Path
) -> None:
    """lastUpdateTime moves with every probe in the API while the state file is not rewritten
    for it; a restart is stored (new resourceVersion); stopping stores the last times."""
    cluster = fake_flink.cluster
    orders = cluster.submit("orders")
    config = daemon_config(state_path, [target("prod", fake_flink.url)])

    async with running_daemon(config) as daemon:
        await daemon.wait_state(dashed(orders), "STARTED", flink_status="RUNNING")
        await _rounds_without_reads(cluster, rounds=3)
        in_file = stored_jobs(state_path)[dashed(orders)]
        shown = await daemon.job(dashed(orders))
        assert shown is not None
        later = await daemon.wait_probed(dashed(orders), rounds=3)
        assert last_update(later) > last_update(shown)
        assert later["metadata"]["resourceVersion"] == shown["metadata"]["resourceVersion"]
        assert stored_jobs(state_path)[dashed(orders)] == in_file

        cluster.restart(orders)
        counted = await daemon.wait_restarts(dashed(orders), 1)
        assert counted["metadata"]["resourceVersion"] > shown["metadata"]["resourceVersion"]
        assert restarts_of(stored_jobs(state_path)[dashed(orders)]) == 1
        last_shown = await daemon.job(dashed(orders))

    stored = stored_jobs(state_path)[dashed(orders)]
    assert last_update(stored) >= last_update(last_shown)


async def _rounds_without_reads(cluster: FakeCluster, rounds: int) -> None:
    """Wait (with a deadline) for `rounds` rounds in a row that asked no numRestarts."""

    async def quiet() -> bool:
        reads = cluster.requests(Endpoint.METRICS)
        await probe_rounds(cluster, rounds)
        return cluster.requests(Endpoint.METRICS) == reads

    await wait_until(quiet, f"{rounds} rounds in a row without a numRestarts read")


async def test_jobmanager_restarts_keep_a_monotonic_lower_bound(state_path: Path) -> None:
    """A new JobManager resets numRestarts and gives the job a new start-time, both seen late
    (the fake's caches lag as a real Flink's do): the count never drops, never exceeds the
    truth, and ends equal to it."""
    cluster = FakeCluster(overview_lag=0.1, metrics_lag=0.6)
    truth = 0
    samples: list[tuple[int | None, float | None, int]] = []

    async with FakeFlinkServer(cluster) as fake:
        orders = cluster.submit("orders")
        job_id = dashed(orders)
        lags = target("prod", fake.url, overview_max_age="150ms", metrics_max_age="700ms")
        config = daemon_config(state_path, [lags])

        async def sample(daemon: DaemonHandle) -> None:
            job = await daemon.job(job_id)
            metric = (await daemon.metrics()).value("flink_probe_job_restarts_total", job_id=job_id)
            samples.append((restarts_of(job), metric, truth))  # truth only grows: read it last

        async with running_daemon(config) as daemon, sampling(daemon, sample):
            await daemon.wait_state(job_id, "STARTED")
            truth += 2
            cluster.restart(orders, n=2)
            await daemon.wait_restarts(job_id, truth)

            # Restarts soon after the failover, while both caches still show the old process.
            # (Each new process then lives long enough for its count to be confirmed: restarts
            # of a process that dies sooner than metrics_max_age leave no trace.)
            for restarts_after in (1, 2):
                truth += 1
                cluster.jobmanager_restart(keep_jobs=True)
                await probe_rounds(cluster, 1)
                truth += restarts_after
                cluster.restart(orders, n=restarts_after)
                job = await daemon.wait_job(job_id, counted_at_least(truth), f"{truth} restarts")
                assert restarts_of(job) == truth, "counted above the true number of restarts"

            assert restarts_of(await daemon.wait_probed(job_id, rounds=3)) == truth

    assert truth == 2 + (1 + 1) + (1 + 2)
    api_values = [api for api, _, _ in samples if api is not None]
    metric_values = [metric for _, metric, _ in samples if metric is not None]
    assert api_values == sorted(api_values), "observedFlinkJobRestarts decreased"
    assert metric_values == sorted(metric_values), "flink_probe_job_restarts_total decreased"
    above = [s for s in samples if (s[0] or 0) > s[2] or (s[1] or 0) > s[2]]
    assert not above, f"counts above the true count (api, metric, truth): {above}"
    assert samples[-1][:2] == (truth, truth)


# -- the state machine -----------------------------------------------------------------------


async def test_static_job_is_starting_until_flink_runs_it(
    fake_flink: FakeFlinkServer, state_path: Path
) -> None:
    cluster = fake_flink.cluster
    jid = uuid.uuid4().hex
    job_id = dashed(jid)
    declared = static_job(job_id, "prod", "orders")
    config = daemon_config(state_path, [target("prod", fake_flink.url, discover=False)], [declared])
    other = cluster.submit("not-declared")

    async with running_daemon(config) as daemon:
        # Declared before Flink knows the job: STARTING, probed (404) without failing.
        await probe_rounds(cluster, 3)
        assert cluster.requests(Endpoint.DETAILS, jid) >= 2
        job = await daemon.job(job_id)
        assert state_of(job) == "STARTING"
        assert job is not None
        assert job["status"]["started"] is None
        assert job["spec"] == {"declaredBy": "tests", "target": "prod"}
        metrics = await daemon.metrics()
        assert job_series(metrics, "flink_probe_job_status", job_id) == []
        assert job_series(metrics, "flink_probe_job_restarts_total", job_id) == []
        assert metrics.value("flink_probe_job_state", job_id=job_id, state="STARTING") == 1.0

        cluster.submit("orders", jid=jid)
        job = await daemon.wait_state(job_id, "STARTED", flink_status="RUNNING")
        started = started_of(job)
        assert started is not None
        assert started["flinkJobId"] == jid
        assert job["metadata"]["deploymentName"] == "orders"
        metrics = await daemon.wait_metrics(
            lambda m: m.value("flink_probe_job_status", job_id=job_id, status="RUNNING") == 1,
            "the job RUNNING",
        )
        assert metrics.value("flink_probe_job_state", job_id=job_id, state="STARTED") == 1.0

        # Without discovery, the cluster's other job is none of the daemon's business.
        assert [j["metadata"]["id"] for j in await daemon.jobs()] == [job_id]
        assert await daemon.job(dashed(other)) is None


async def test_jobs_end_finished_failed_and_terminated(
    fake_flink: FakeFlinkServer, state_path: Path
) -> None:
    cluster = fake_flink.cluster
    finished, failed, slow_cancel, fast_cancel = (
        cluster.submit(name) for name in ("finished", "failed", "slow-cancel", "fast-cancel")
    )
    config = daemon_config(state_path, [target("prod", fake_flink.url)])

    async with running_daemon(config) as daemon:
        for jid in (finished, failed, slow_cancel, fast_cancel):
            await daemon.wait_state(dashed(jid), "STARTED")

        with structlog.testing.capture_logs() as logs:
            cluster.finish(finished)
            cluster.fail(failed, "the input topic orders-v2 does not exist")
            cluster.cancel(slow_cancel, slow=True)
            cluster.cancel(fast_cancel)

            job = await daemon.wait_state(dashed(finished), "FINISHED")
            assert job["status"]["failure"] is None
            assert job["metadata"]["terminatedAt"] is not None
            assert flink_status_of(job) == "FINISHED"

            job = await daemon.wait_state(dashed(failed), "FAILED")
            failure = job["status"]["failure"]
            assert failure["reason"] == "FlinkJobFailed"
            assert "the input topic orders-v2 does not exist" in failure["message"]
            assert failure["failedAt"] is not None
            assert job["metadata"]["terminatedAt"] is not None
            assert flink_status_of(job) == "FAILED"

            job = await daemon.wait_state(
                dashed(slow_cancel), "TERMINATING", flink_status="CANCELLING"
            )
            assert job["metadata"]["terminatedAt"] is None
            cluster.cancel(slow_cancel)
            job = await daemon.wait_state(dashed(slow_cancel), "TERMINATED")
            assert job["metadata"]["terminatedAt"] is not None
            assert flink_status_of(job) == "CANCELED"

            # Seen only as CANCELED: the Job still went through TERMINATING.
            job = await daemon.wait_state(dashed(fast_cancel), "TERMINATED")
            assert job["metadata"]["terminatedAt"] is not None
            assert flink_status_of(job) == "CANCELED"

        # (capture_logs reaches the daemon's loggers: they are lazy proxies, not cached.)
        fast_path = [
            (entry["source"], entry["state"])
            for entry in logs
            if entry["event"] == "job state changed" and entry["job_id"] == dashed(fast_cancel)
        ]
        assert fast_path == [("STARTED", "TERMINATING"), ("TERMINATING", "TERMINATED")]

        metrics = await daemon.metrics()
        for jid, state in (
            (finished, "FINISHED"),
            (failed, "FAILED"),
            (slow_cancel, "TERMINATED"),
            (fast_cancel, "TERMINATED"),
        ):
            assert metrics.value("flink_probe_job_state", job_id=dashed(jid), state=state) == 1.0


async def test_vanished_job_fails_after_the_grace_probes(
    fake_flink: FakeFlinkServer, state_path: Path
) -> None:
    cluster = fake_flink.cluster
    grace = 4
    jid = cluster.submit("orders")
    config = daemon_config(state_path, [target("prod", fake_flink.url)], not_found_grace=grace)
    # (state, probes that had found the job gone by the time the state was read)
    seen: list[tuple[str | None, int]] = []

    async def sample(daemon: DaemonHandle) -> None:
        state = state_of(await daemon.job(dashed(jid)))
        # Counted after the read: the probes behind the state read are all in this number.
        seen.append((state, cluster.requests(Endpoint.DETAILS, jid)))

    async with running_daemon(config) as daemon:
        await daemon.wait_state(dashed(jid), "STARTED")
        assert cluster.requests(Endpoint.DETAILS, jid) == 0  # in the overview: never looked up
        async with sampling(daemon, sample):
            cluster.remove(jid)
            job = await daemon.wait_state(dashed(jid), "FAILED")
        failure = job["status"]["failure"]
        assert failure["reason"] == "FlinkJobNotFound"
        assert f"for {grace} probes in a row" in failure["message"]
        assert job["metadata"]["terminatedAt"] is not None

    # A gone probe is an overview without the job plus a 404 for its details.
    early = [(state, probes) for state, probes in seen if state == "FAILED" and probes < grace]
    assert not early, f"FAILED before {grace} probes found the job gone: {early}"


async def test_static_job_never_seen_fails_with_start_timeout(
    fake_flink: FakeFlinkServer, state_path: Path
) -> None:
    job_id = str(uuid.uuid4())
    config = daemon_config(
        state_path,
        [target("prod", fake_flink.url, discover=False)],
        [static_job(job_id, "prod", "never-submitted")],
        start_timeout="1s",
    )
    async with running_daemon(config) as daemon:
        assert state_of(await daemon.job(job_id)) == "STARTING"
        job = await daemon.wait_state(job_id, "FAILED")

    failure = job["status"]["failure"]
    assert failure["reason"] == "StartTimeout"
    created = parse_time(job["metadata"]["createdAt"])
    assert (parse_time(failure["failedAt"]) - created).total_seconds() >= 1.0
    assert job["status"]["started"] is None


# -- unreachable and misbehaving clusters ----------------------------------------------------


async def test_unreachable_target_shows_unknown_while_others_are_probed(
    fake_flink: FakeFlinkServer, state_path: Path
) -> None:
    steady = fake_flink.cluster.submit("steady")
    flaky_cluster = FakeCluster()
    flaky = flaky_cluster.submit("flaky")
    flaky_cluster.restart(flaky, n=2)
    flaky_server = FakeFlinkServer(flaky_cluster)
    await flaky_server.start()
    flaky_port = flaky_server.port
    config = daemon_config(
        state_path,
        [
            target("steady", fake_flink.url),
            target("flaky", flaky_server.url),
            target("nowhere", f"http://127.0.0.1:{free_port()}"),
        ],
    )
    try:
        async with running_daemon(config) as daemon:
            await daemon.wait_restarts(dashed(flaky), 2)
            await daemon.wait_state(dashed(steady), "STARTED")
            await daemon.wait_metrics(
                lambda m: (
                    m.value("flink_probe_target_up", target="flaky") == 1
                    and m.value("flink_probe_target_up", target="nowhere") == 0
                ),
                "flaky up, nowhere down",
            )

            await flaky_server.close()
            job = await daemon.wait_job(
                dashed(flaky), lambda j: flink_status_of(j) == "UNKNOWN", "UNKNOWN"
            )
            assert state_of(job) == "STARTED"
            assert restarts_of(job) == 2
            metrics = await daemon.wait_metrics(
                lambda m: (
                    m.value("flink_probe_target_up", target="flaky") == 0
                    and m.value("flink_probe_target_up", target="steady") == 1
                ),
                "flaky down, steady up",
            )
            assert (
                metrics.value("flink_probe_job_status", job_id=dashed(flaky), status="UNKNOWN")
                == 1.0
            )
            assert metrics.total("flink_probe_request_errors_total", target="flaky") >= 1

            # The other target's Jobs keep being probed.
            await daemon.wait_probed(dashed(steady), rounds=3)
            still = await daemon.job(dashed(flaky))
            assert (state_of(still), flink_status_of(still), restarts_of(still)) == (
                "STARTED",
                "UNKNOWN",
                2,
            )

            # The cluster comes back on its address: probing resumes by itself.
            flaky_server = FakeFlinkServer(flaky_cluster, port=flaky_port)
            await flaky_server.start()
            job = await daemon.wait_job(
                dashed(flaky), lambda j: flink_status_of(j) == "RUNNING", "RUNNING again"
            )
            assert (state_of(job), restarts_of(job)) == ("STARTED", 2)
    finally:
        await flaky_server.close()


FAULTS: dict[str, tuple[Fault | None, str]] = {
    # target name: (fault on every endpoint, or None for a leader election; error reason)
    "hang": (Fault(FaultKind.HANG), "timeout"),
    "slow": (Fault(FaultKind.SLOW, seconds=1.0), "timeout"),
    "http-500": (Fault(FaultKind.HTTP_500), "http_status"),
    "garbage": (Fault(FaultKind.GARBAGE), "not_json"),
    "wrong-types": (Fault(FaultKind.WRONG_TYPES), "bad_shape"),
    "oversized": (Fault(FaultKind.OVERSIZED, size=1 << 20), "too_large"),
    "reset": (Fault(FaultKind.RESET), "reset"),
    "election": (None, "http_status"),
}


async def test_faults_change_nothing_and_heal_by_themselves(state_path: Path) -> None:
    """Every fault at once, one per cluster: each is counted by reason, leaves its Job STARTED
    with its count, turns only observedFlinkJobStatus UNKNOWN, and ends when the fault does.
    A cluster whose numRestarts alone fails keeps RUNNING and catches up afterwards."""
    clusters = {name: FakeCluster() for name in [*FAULTS, "metrics-500"]}
    jids = {}
    for name, cluster in clusters.items():
        jids[name] = cluster.submit(name)
        cluster.restart(jids[name], n=2)
    problems: list[str] = []

    async def sample(daemon: DaemonHandle) -> None:
        for name in clusters:
            job = await daemon.job(dashed(jids[name]))
            if state_of(job) != "STARTED" or (restarts_of(job) or 0) < 2:
                problems.append(f"{name}: {job}")
        for path in ("/healthz", "/metrics"):
            answer = await daemon.request(path)
            if answer.status != 200:
                problems.append(f"{path}: {answer.status}")

    async with contextlib.AsyncExitStack() as stack:
        servers = {
            name: await stack.enter_async_context(FakeFlinkServer(cluster))
            for name, cluster in clusters.items()
        }
        config = daemon_config(
            state_path,
            [target(name, server.url) for name, server in servers.items()],
            max_body_bytes="64KiB",
        )
        daemon = await stack.enter_async_context(running_daemon(config))
        for name in clusters:
            await daemon.wait_restarts(dashed(jids[name]), 2)

        async with sampling(daemon, sample):
            for name, (fault, _) in FAULTS.items():
                if fault is None:
                    clusters[name].election(True)
                else:
                    clusters[name].set_fault("*", fault)
            clusters["metrics-500"].set_fault(Endpoint.METRICS, FaultKind.HTTP_500)
            clusters["metrics-500"].restart(jids["metrics-500"])
            faults_set = time.time()

            for name in FAULTS:
                job = await daemon.wait_job(
                    dashed(jids[name]),
                    lambda j: probed_after(j, faults_set) and flink_status_of(j) == "UNKNOWN",
                    "UNKNOWN",
                )
                assert restarts_of(job) == 2, name

            async def all_faults_counted() -> Metrics | None:
                metrics = await daemon.metrics()
                for name, (_, reason) in FAULTS.items():
                    if metrics.total("flink_probe_probes_total", target=name, result="failure") < 2:
                        return None
                    if not metrics.total(
                        "flink_probe_request_errors_total", target=name, reason=reason
                    ):
                        return None
                errors = metrics.total(
                    "flink_probe_request_errors_total", target="metrics-500", endpoint="metrics"
                )
                return metrics if errors >= 2 else None

            metrics = await wait_until(all_faults_counted, "every fault counted twice")
            for name in FAULTS:
                assert metrics.value("flink_probe_target_up", target=name) == 0.0, name
            # Only numRestarts fails there: the status is still learnt, the count cannot grow.
            metrics_faulted = await daemon.wait_job(
                dashed(jids["metrics-500"]),
                lambda j: probed_after(j, faults_set) and flink_status_of(j) == "RUNNING",
                "RUNNING while numRestarts fails",
            )
            assert restarts_of(metrics_faulted) == 2

            for cluster in clusters.values():
                cluster.election(False)
                cluster.clear_fault("*")
                cluster.clear_fault(Endpoint.METRICS)
            for name in FAULTS:
                job = await daemon.wait_job(
                    dashed(jids[name]), lambda j: flink_status_of(j) == "RUNNING", "recovery"
                )
                assert (state_of(job), restarts_of(job)) == ("STARTED", 2), name
            await daemon.wait_restarts(dashed(jids["metrics-500"]), 3)

        await daemon.wait_metrics(
            lambda m: all(m.value("flink_probe_target_up", target=name) == 1 for name in clusters),
            "every target up again",
        )
    assert not problems, problems[:10]


# -- the store -----------------------------------------------------------------------------


def stored_jobs(path: Path) -> dict[str, dict[str, Any]]:
    """The Jobs in the state file, as the API would show them."""
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT job_id, document FROM jobs").fetchall()
    return {job_id: json.loads(document)["job"] for job_id, document in rows}


def outcome(job: dict[str, Any]) -> tuple[object, ...]:
    """What later probes of a settled count and final state cannot change."""
    return (
        job["status"]["state"],
        job["status"]["failure"],
        job["metadata"]["terminatedAt"],
        restarts_of(job),
    )


async def test_exposed_values_are_stored_and_served_after_a_restart(
    fake_flink: FakeFlinkServer, state_path: Path
) -> None:
    cluster = fake_flink.cluster
    orders = cluster.submit("orders")
    cluster.restart(orders, n=3)
    nightly = cluster.submit("nightly")
    broken = cluster.submit("broken")
    cluster.finish(nightly)
    cluster.fail(broken, "out of memory")
    config = daemon_config(state_path, [target("prod", fake_flink.url)])

    async with running_daemon(config) as daemon:
        await daemon.wait_restarts(dashed(orders), 3)
        await daemon.wait_state(dashed(nightly), "FINISHED")
        await daemon.wait_state(dashed(broken), "FAILED")
        exposed = {job["metadata"]["id"]: job for job in await daemon.jobs()}
        # Everything exposed is already in the file (the file may be a round ahead).
        in_file = stored_jobs(state_path)
        for job_id, job in exposed.items():
            version = job["metadata"]["resourceVersion"]
            assert in_file[job_id]["metadata"]["resourceVersion"] >= version
            assert outcome(in_file[job_id]) == outcome(job)

    stored = stored_jobs(state_path)
    assert set(stored) == set(exposed)
    assert {job_id: outcome(job) for job_id, job in stored.items()} == {
        job_id: outcome(job) for job_id, job in exposed.items()
    }

    # A new daemon on the same file, whose first round cannot finish: it serves what is stored.
    cluster.set_fault("*", FaultKind.HANG)
    slow = daemon_config(
        state_path, [target("prod", fake_flink.url)], interval="30s", timeout="30s"
    )
    async with running_daemon(slow) as daemon:
        served = {job["metadata"]["id"]: job for job in await daemon.jobs()}
        assert served == stored
        assert restarts_of(served[dashed(orders)]) == 3
        assert (await daemon.request("/readyz")).status == 503
        await fake_flink.close()  # ends the hanging round, so the daemon stops at once
