"""The event log against a real Flink: why a job restarted, kept across a kill -9 of the daemon
and across JobManager failovers, and a watch that delivers each change once.

Runs on Flink 2.3.0 and 1.20.x (the `flink` fixture's shared cluster per version).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_harness import dashed, restarts_of, state_of
from event_log import EVENTS, causes, events_of, read_watch, reasons, steps

from .daemon import ProbeDaemon, record_result
from .testjob import FlinkWithTestJob

pytestmark = [pytest.mark.realflink, pytest.mark.slow]

FAILURE_MESSAGE = "flinkprobe: intentional failure"
FAIL_AFTER_MS = 6000
"""The job fails this long after every (re)start: each restart is counted before the next."""


def test_three_failures_are_three_restarted_events_with_the_message_across_a_kill9(
    flink: FlinkWithTestJob, tmp_path: Path, flink_version: str
) -> None:
    cluster = flink.cluster
    with ProbeDaemon(tmp_path / "probe", cluster.rest_url) as daemon:
        status, listed = daemon.client.get_json(EVENTS)
        assert status == 200, listed
        before = int(listed["metadata"]["resourceVersion"])
        jid = flink.submit("restart", FAIL_AFTER_MS)
        job_id = dashed(jid)
        daemon.wait_job(job_id, lambda job: restarts_of(job) == 1, "the first restart", 60)

        daemon.kill9()
        daemon.restart()
        daemon.wait_job(job_id, lambda job: (restarts_of(job) or 0) >= 3, "three restarts", 90)
        cluster.cancel(jid)
        job = daemon.wait_settled(job_id)
        final = cluster.wait_for_num_restarts(jid)

        events = events_of(daemon.client, job_id)
        status, listed = daemon.client.get_json(EVENTS)
        watched = read_watch(
            daemon.client.base_url,
            f"{EVENTS}?jobId={job_id}",
            before,
            int(listed["metadata"]["resourceVersion"]),
        )
        daemon.terminate()

    assert restarts_of(job) == final >= 3
    assert state_of(job) == "TERMINATED"
    assert reasons(events)[:2] == ["JOB_STARTING", "JOB_STARTED"]
    assert reasons(events)[-2:] == ["JOB_TERMINATING", "JOB_TERMINATED"]
    # One event per restart, the count stepping by one; each carries Flink's root cause.
    assert steps(events) == [(n, n + 1) for n in range(final)]
    restarted = [event for event in events if event["metadata"]["name"] == "JOB_RESTARTED"]
    for event in restarted:
        [cause] = event["spec"]["details"]["rootCauses"]
        assert FAILURE_MESSAGE in cause["message"], event
        assert FAILURE_MESSAGE in event["spec"]["message"]
    assert len(causes(events)) == final
    # The watch from before the job existed: every event of it, each once, in order.
    assert [change["type"] for change in watched] == ["ADDED"] * len(events)
    assert [change["object"]["metadata"]["id"] for change in watched] == [
        event["metadata"]["id"] for event in events
    ]
    record_result(
        f"flink-{flink_version} events: {reasons(events)}, restarts {steps(events)}, "
        f"flink={final}, watched {len(watched)}"
    )
