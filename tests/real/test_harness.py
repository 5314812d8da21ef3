"""The harness and every test-job mode behave as the real-Flink facts (REAL-FLINK.md) say."""

from __future__ import annotations

import pytest

from .testjob import FlinkWithTestJob
from .waiting import wait_for

pytestmark = [pytest.mark.realflink, pytest.mark.slow]

FAILURE_MESSAGE = "flinkprobe: intentional failure"
ENDED = frozenset({"FINISHED", "FAILED", "CANCELED"})


def test_jobmanager_runs_with_the_written_config(flink: FlinkWithTestJob) -> None:
    config = flink.cluster.jobmanager_config()

    assert config["rest.address"] == "127.0.0.1"
    assert config["taskmanager.numberOfTaskSlots"] == "8"
    assert config["metrics.fetcher.update-interval"] == "1000"
    assert config["web.refresh-interval"] == "1000"
    assert flink.cluster.get_json("/overview")["flink-version"] == flink.cluster.version


def test_restart_job_counts_growing_restarts(flink: FlinkWithTestJob) -> None:
    cluster = flink.cluster
    jid = flink.submit("restart", 1000)

    first = cluster.wait_for_num_restarts(jid, minimum=1)
    later = cluster.wait_for_num_restarts(jid, minimum=first + 1)

    assert later > first
    assert cluster.job_state(jid) in {"RUNNING", "RESTARTING"}
    assert cluster.get_json(f"/jobs/{jid}")["name"] == "flinkprobe-restart"


def test_finish_job_ends_finished(flink: FlinkWithTestJob) -> None:
    jid = flink.submit("finish", 2000)

    assert flink.cluster.wait_for_state(jid, ENDED) == "FINISHED"


def test_fail_job_ends_failed_with_its_message_in_the_exception_history(
    flink: FlinkWithTestJob,
) -> None:
    cluster = flink.cluster
    jid = flink.submit("fail", 1000)

    assert cluster.wait_for_state(jid, ENDED) == "FAILED"
    entries = wait_for(
        lambda: cluster.exceptions(jid)["exceptionHistory"]["entries"], 30, "exception history"
    )
    assert FAILURE_MESSAGE in entries[0]["stacktrace"]


def test_exhaust_job_ends_failed_after_two_restarts(flink: FlinkWithTestJob) -> None:
    cluster = flink.cluster
    jid = flink.submit("exhaust", 1000)

    def ended_state_while_watching_restarts() -> str | None:
        # The JobManager fetches metrics only while someone asks for them, and cannot fetch
        # those of an ended job: watch numRestarts as a probe would, or it stays [] forever.
        cluster.num_restarts(jid)
        state = cluster.job_state(jid)
        return state if state in ENDED else None

    assert wait_for(ended_state_while_watching_restarts, 60, "exhaust job ended") == "FAILED"
    # The value fetched last before the end stays; the fetcher may serve it up to 1 s late.
    assert cluster.wait_for_num_restarts(jid, minimum=2) == 2


def test_slowcancel_job_is_cancelling_before_canceled(flink: FlinkWithTestJob) -> None:
    cluster = flink.cluster
    jid = flink.submit("slowcancel", 3000)
    cluster.wait_for_tasks_running(jid)

    cluster.cancel(jid)

    assert cluster.wait_for_state(jid, {"CANCELLING"} | ENDED) == "CANCELLING"
    assert cluster.wait_for_state(jid, ENDED) == "CANCELED"


def test_jobmanager_killed_without_ha_comes_back_without_the_job(
    flink: FlinkWithTestJob,
) -> None:
    cluster = flink.cluster
    jid = flink.submit("forever")
    cluster.wait_for_state(jid, "RUNNING")
    killed = cluster.jobmanager
    assert killed is not None

    cluster.kill_jobmanager()
    assert not killed.is_running()
    cluster.start_jobmanager()

    assert wait_for(lambda: cluster.request("GET", f"/jobs/{jid}").status == 404, 60, "job 404")
    assert cluster.jobs_overview() == []


def test_jobmanager_failover_with_ha_keeps_the_jobs_with_new_start_times_and_counts(
    flink_ha: FlinkWithTestJob,
) -> None:
    cluster = flink_ha.cluster
    restarting = flink_ha.submit("restart", 1000)
    steady = flink_ha.submit("forever")
    restarts_before = cluster.wait_for_num_restarts(restarting, minimum=3)
    assert cluster.wait_for_num_restarts(steady) == 0
    start_times_before = {jid: cluster.start_time(jid) for jid in (restarting, steady)}

    cluster.kill_jobmanager()
    cluster.start_jobmanager()

    for jid, before in start_times_before.items():
        assert before is not None
        assert cluster.wait_for_start_time_after(jid, before) > before
    # A fresh JobManager counts from 0: the first count it reports is below the old one.
    assert cluster.wait_for_num_restarts(restarting) < restarts_before
    assert cluster.wait_for_num_restarts(steady) == 0
    assert {job["jid"] for job in cluster.jobs_overview()} == {restarting, steady}
