"""The real daemon (`flink-probe run`, a subprocess) against a real Flink cluster.

Each scenario runs on Flink 2.3.0 and 1.20.x (the `flink` fixture's shared cluster per
version). Restart counts seen (the daemon's and Flink's) are printed and appended to
`$REAL_SUITE_RESULTS` (`record_result`).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import dashed, flink_status_of, restarts_of, started_of, state_of, static_job

from .cluster import FlinkCluster, FlinkRestError
from .daemon import (
    TARGET,
    ProbeDaemon,
    RestartWatch,
    job_restarts_metric,
    record_result,
)
from .testjob import FlinkWithTestJob
from .waiting import wait_for

pytestmark = [pytest.mark.realflink, pytest.mark.slow]

FAILURE_MESSAGE = "flinkprobe: intentional failure"
RUNNING_OR_RESTARTING = frozenset({"RUNNING", "RESTARTING"})


def assert_discovered(job: dict[str, Any], jid: str, mode: str) -> None:
    """A discovered Flink job: id = jid as a dashed UUID, deployment = the job's name."""
    assert job["metadata"]["id"] == dashed(jid)
    assert job["metadata"]["deploymentName"] == f"flinkprobe-{mode}"
    assert job["metadata"]["annotations"]["flink-probe/target"] == TARGET
    started = started_of(job)
    assert started is not None
    assert started["flinkJobId"] == jid


def submit_with_job_id(flink: FlinkWithTestJob, jid: str, mode: str, *args: str | int) -> None:
    """POST /jars/:jarid/run with a chosen `jobId` (JarRunRequestBody accepts one)."""
    body = {"programArgsList": [mode, *map(str, args)], "jobId": jid}
    response = flink.cluster.request(
        "POST",
        f"/jars/{flink.jar_id}/run",
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    if response.status != 200:
        raise FlinkRestError("POST", f"/jars/{flink.jar_id}/run", response)
    assert response.json()["jobid"] == jid


def final_flink_count(cluster: FlinkCluster, jid: str) -> int:
    """numRestarts of an ended job: the value the JobManager fetched last (it stays)."""
    return cluster.wait_for_num_restarts(jid)


def test_counting_follows_flink_and_ends_equal_to_it(
    flink: FlinkWithTestJob, tmp_path: Path, flink_version: str
) -> None:
    cluster = flink.cluster
    began = time.monotonic()
    with ProbeDaemon(tmp_path / "probe", cluster.rest_url) as daemon:
        jid = flink.submit("restart", 1500)
        watch = RestartWatch(daemon, cluster, dashed(jid), jid)
        watch.until(lambda s: s.state == "STARTED", "the daemon to discover the job")
        watch.until(
            lambda s: s.flink is not None and s.flink >= 4, "4 restarts in Flink", timeout=120
        )
        cluster.cancel(jid)
        after_cancel = cluster.num_restarts(jid)
        cluster.wait_for_state(jid, "CANCELED")

        job = daemon.wait_settled(dashed(jid))
        final = final_flink_count(cluster, jid)
        assert state_of(job) == "TERMINATED"
        assert flink_status_of(job) == "CANCELED"
        assert restarts_of(job) == final
        assert job_restarts_metric(daemon.metrics(), dashed(jid)) == final
        assert_discovered(job, jid, "restart")
        daemon.terminate()

    live = sorted({s.daemon for s in watch.samples if s.daemon and s.state == "STARTED"})
    # It counted while the job ran (about one restart behind Flink), not only at the end.
    assert len(live) >= 2, watch.report()
    record_result(
        f"flink-{flink_version} counting: daemon={restarts_of(job)} flink={final} "
        f"(flink right after cancel: {after_cancel}); live counts {live}; "
        f"{len(watch.samples)} samples, {time.monotonic() - began:.1f} s"
    )


def test_outcomes_finished_failed_exhausted_and_cancelled(
    flink: FlinkWithTestJob, tmp_path: Path, flink_version: str
) -> None:
    cluster = flink.cluster
    with ProbeDaemon(tmp_path / "probe", cluster.rest_url) as daemon:
        # Concurrently, one slot each; slowcancel stalls in CANCELLING for about 4 s.
        modes = {"slowcancel": 4000, "finish": 2000, "fail": 1000, "exhaust": 1000}
        jids = {mode: flink.submit(mode, ms) for mode, ms in modes.items()}

        # Cancelled: TERMINATING while Flink stalls in CANCELLING, then TERMINATED.
        slow = dashed(jids["slowcancel"])
        daemon.wait_state(slow, "STARTED")
        cluster.wait_for_tasks_running(jids["slowcancel"])
        cluster.cancel(jids["slowcancel"])
        cancelling = daemon.wait_job(
            slow,
            lambda j: state_of(j) in {"TERMINATING", "TERMINATED"},
            "TERMINATING or TERMINATED",
        )
        assert state_of(cancelling) == "TERMINATING", cancelling
        assert flink_status_of(cancelling) == "CANCELLING"
        cancelled = daemon.wait_state(slow, "TERMINATED")
        assert flink_status_of(cancelled) == "CANCELED"
        assert cancelled["metadata"]["terminatedAt"] is not None

        finished = daemon.wait_state(dashed(jids["finish"]), "FINISHED")
        assert flink_status_of(finished) == "FINISHED"
        assert finished["status"]["failure"] is None
        assert cluster.job_state(jids["finish"]) == "FINISHED"

        failed = daemon.wait_state(dashed(jids["fail"]), "FAILED")
        failure = failed["status"]["failure"]
        assert failure["reason"] == "FlinkJobFailed"
        assert FAILURE_MESSAGE in failure["message"]
        assert failure["failedAt"] is not None
        assert flink_status_of(failed) == "FAILED"
        assert cluster.job_state(jids["fail"]) == "FAILED"

        exhausted = daemon.wait_settled(dashed(jids["exhaust"]))
        assert state_of(exhausted) == "FAILED"
        assert exhausted["status"]["failure"]["reason"] == "FlinkJobFailed"
        assert restarts_of(exhausted) == 2
        flink_exhausted = final_flink_count(cluster, jids["exhaust"])
        assert flink_exhausted == 2
        assert cluster.job_state(jids["exhaust"]) == "FAILED"

        for mode, jid in jids.items():
            job = daemon.job(dashed(jid))
            assert job is not None, mode
            assert_discovered(job, jid, mode)
        daemon.terminate()
    record_result(
        f"flink-{flink_version} outcomes: exhaust daemon={restarts_of(exhausted)} "
        f"flink={flink_exhausted}; fail/finish/slowcancel restarts "
        f"{restarts_of(failed)}/{restarts_of(finished)}/{restarts_of(cancelled)}"
    )


def test_discovered_jobs_and_a_static_job(flink: FlinkWithTestJob, tmp_path: Path) -> None:
    cluster = flink.cluster
    static_id = str(uuid.uuid4())
    static_jid = static_id.replace("-", "")
    declared = static_job(static_id, TARGET, "orders")
    with ProbeDaemon(tmp_path / "probe", cluster.rest_url, jobs=[declared]) as daemon:
        # Declared, not yet submitted: STARTING, without status.started.
        starting = daemon.job(static_id)
        assert starting is not None
        assert state_of(starting) == "STARTING"
        assert starting["status"]["started"] is None
        assert starting["metadata"]["deploymentName"] == "orders"

        discovered_jid = flink.submit("forever")
        submit_with_job_id(flink, static_jid, "forever")

        static = daemon.wait_job(
            static_id,
            lambda j: state_of(j) == "STARTED" and flink_status_of(j) == "RUNNING",
            "STARTED and RUNNING",
        )
        static_started = started_of(static)
        assert static_started is not None
        assert static_started["flinkJobId"] == static_jid
        assert static_started["observedFlinkJobRestarts"] == 0
        assert static["metadata"]["deploymentName"] == "orders"
        assert static["spec"] == {"declaredBy": "tests", "target": TARGET}  # static_job's spec

        discovered = daemon.wait_job(
            dashed(discovered_jid),
            lambda j: state_of(j) == "STARTED" and flink_status_of(j) == "RUNNING",
            "STARTED and RUNNING",
        )
        assert_discovered(discovered, discovered_jid, "forever")

        ids = [job["metadata"]["id"] for job in daemon.jobs()]
        assert ids.count(static_id) == 1
        assert ids.count(dashed(discovered_jid)) == 1

        cluster.cancel(static_jid)
        assert state_of(daemon.wait_settled(static_id)) == "TERMINATED"
        daemon.terminate()


def test_jobmanager_killed_without_ha_leaves_unknown_then_not_found(
    flink: FlinkWithTestJob, tmp_path: Path, flink_version: str
) -> None:
    cluster = flink.cluster
    with ProbeDaemon(tmp_path / "probe", cluster.rest_url, not_found_grace=2) as daemon:
        jid = flink.submit("restart", 1500)
        job_id = dashed(jid)
        watch = RestartWatch(daemon, cluster, job_id, jid)
        watch.until(
            lambda s: (s.daemon or 0) >= 1 and str(s.flink_status) in RUNNING_OR_RESTARTING,
            "a restart counted",
            timeout=90,
        )
        before_kill = watch.highest

        cluster.kill_jobmanager()
        down = daemon.wait_job(job_id, lambda j: flink_status_of(j) == "UNKNOWN", "UNKNOWN")
        frozen = restarts_of(down)
        assert frozen is not None
        assert frozen >= before_kill
        wait_for(
            lambda: daemon.metrics().value("flink_probe_target_up", target=TARGET) == 0,
            30,
            "flink_probe_target_up 0",
        )
        # While the JobManager is away the daemon keeps trying, and changes nothing.
        failures_at_start = daemon.metrics().total(
            "flink_probe_probes_total", target=TARGET, result="failure"
        )

        def unchanged_after_two_more_failed_rounds() -> bool:
            job = daemon.job(job_id)
            assert state_of(job) == "STARTED", job
            assert restarts_of(job) == frozen, job
            assert flink_status_of(job) == "UNKNOWN", job
            failures = daemon.metrics().total(
                "flink_probe_probes_total", target=TARGET, result="failure"
            )
            return failures >= failures_at_start + 2

        wait_for(unchanged_after_two_more_failed_rounds, 30, "two more failed probe rounds")

        cluster.start_jobmanager()
        failed = daemon.wait_state(job_id, "FAILED", timeout=90)
        assert failed["status"]["failure"]["reason"] == "FlinkJobNotFound"
        assert failed["status"]["failure"]["failedAt"] is not None
        assert restarts_of(failed) == frozen
        # The Flink side: a JobManager without HA comes back without the job.
        assert cluster.request("GET", f"/jobs/{jid}").status == 404
        assert jid not in {job["jid"] for job in cluster.jobs_overview()}
        wait_for(
            lambda: daemon.metrics().value("flink_probe_target_up", target=TARGET) == 1,
            30,
            "flink_probe_target_up 1",
        )
        daemon.terminate()
    record_result(
        f"flink-{flink_version} jobmanager-killed: daemon before kill={before_kill}, "
        f"while down={frozen}, FAILED with {restarts_of(failed)}"
    )


def test_daemon_killed_mid_run_never_shows_a_lower_count(
    flink: FlinkWithTestJob, tmp_path: Path, flink_version: str
) -> None:
    cluster = flink.cluster
    with ProbeDaemon(tmp_path / "probe", cluster.rest_url) as daemon:
        jid = flink.submit("restart", 1500)
        job_id = dashed(jid)
        watch = RestartWatch(daemon, cluster, job_id, jid)

        def count_exposed() -> int:
            """Sample the API (the watch) and /metrics; the watch keeps the highest of both."""
            sample = watch.sample()
            metric = job_restarts_metric(daemon.metrics(), job_id)
            if metric is not None:
                watch.highest = max(watch.highest, int(metric))
            return sample.daemon or 0

        wait_for(lambda: count_exposed() >= 2, 90, "2 restarts counted", interval=0.3)
        count_exposed()  # the last look before the kill
        highest_before_kill = watch.highest

        daemon.kill9()
        daemon.restart()
        first = daemon.job(job_id)
        first_metric = job_restarts_metric(daemon.metrics(), job_id)
        assert first is not None
        first_count = restarts_of(first)
        assert first_count is not None
        assert first_count >= highest_before_kill
        assert first_metric is not None
        assert first_metric >= highest_before_kill

        later = watch.until(
            lambda s: (s.daemon or 0) > max(first_count, first_metric),
            "the count to grow after the restart",
            timeout=90,
        )
        cluster.cancel(jid)
        job = daemon.wait_settled(job_id)
        final = final_flink_count(cluster, jid)
        assert restarts_of(job) == final
        daemon.terminate()
    record_result(
        f"flink-{flink_version} daemon-kill9: highest exposed before kill={highest_before_kill}, "
        f"first after restart={first_count} (metric {first_metric:g}), later={later.daemon}, "
        f"final daemon={restarts_of(job)} flink={final}"
    )
