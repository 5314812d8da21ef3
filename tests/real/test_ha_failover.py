"""The real daemon across two JobManager failovers of a real Flink with ZooKeeper HA.

Two scenarios: the JobManager killed in a quiet window, once the daemon has credited Flink's
count, and killed right after a restart, before it could have.

What is exactly checkable. Flink's `numRestarts` restarts from 0 in every JobManager epoch,
the failover itself is in no Flink counter, and restarts while no JobManager runs are lost for
everyone. So the daemon's count at the end must equal the sum over epochs of the last
`numRestarts` the daemon could have read in that epoch, plus one per failover. We make "what
the daemon could have read" a number we know, by killing the JobManager only when:

1. the daemon shows exactly (earlier epochs' credit) + Flink's current `numRestarts` =: f,
   read from Flink just after the daemon, so the daemon credited at least f in this epoch;
2. Flink still serves f at a request sent less than `KILL_WITHIN_S` before the kill. The
   daemon credits a value only once an overview request sent at least E = 1 s after reading it
   proved the epoch still current; every such overview was sent before the kill, so every
   credited value was read more than 1 s before the kill, before that last request of ours,
   and Flink serves one epoch's count in increasing order: the daemon credited at most f.

Then the epoch's credit is exactly f, and at the end (job cancelled, count settled) the
daemon's count must be f0 + 1 + f1 + 1 + f2 (f2: Flink's final count). Throughout, the
`RestartWatch` checks on every sample that the count never goes down and never exceeds the
earlier epochs' credit plus Flink's current count. A job that never fails (`forever`) must end
with exactly 2: the two failovers.

Killed right after a restart (`kill_after_a_restart`): 1.5 s after the job came back RUNNING,
its count moved about 2 s before the kill. The daemon reads numRestarts every probe while the
overview shows a change, so it reads that count in time, but it credits a read only once an
overview at most E = 1 s old shows the epoch still current after it: not before the kill. When the
successor's start-time shows up (seconds later, so more than K = 1 s after every read of the
dead leader), step 1 credits those reads to the old epoch before sealing it; without it the
restart would be lost. The count must again end at Flink's per-epoch counts plus the failovers.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_harness import dashed, flink_status_of, restarts_of, state_of
from event_log import events_of, steps

from .cluster import FlinkCluster, FlinkRestError
from .daemon import (
    TARGET,
    ProbeDaemon,
    RestartWatch,
    Sample,
    kill_jobmanager_when_caught_up,
    record_result,
)
from .testjob import FlinkWithTestJob
from .waiting import wait_for

pytestmark = [pytest.mark.realflink, pytest.mark.slow]

FAILOVERS = 2
FAILURE_MESSAGE = "flinkprobe: intentional failure"
# Fails 3 s after every (re)start: about one restart in 4 s, so the daemon (which shows a
# restart 2-3 s after Flink does) is caught up with Flink for a while in every cycle.
RESTART_EVERY_MS = 3000
KILL_AFTER_RUNNING_S = 1.5
"""How long after a RESTARTING -> RUNNING edge `kill_after_a_restart` kills the JobManager."""
COUNT_READ_AFTER_RUNNING_S = 1.2
"""When Flink's count is read after that edge: at least 1.7 s after the failure (the restart
delay is 0.5 s), longer than the metric fetcher's 1 s interval, and before the kill."""

Kill = Callable[[RestartWatch, FlinkCluster], int]
"""Kills the JobManager at some moment of the watched job's life; returns Flink's count then."""


def start_time_or_none(cluster: FlinkCluster, jid: str) -> int | None:
    try:
        return cluster.start_time(jid)
    except (OSError, FlinkRestError):
        return None  # no JobManager, or a leader election (503)


def running_edge(cluster: FlinkCluster, jid: str) -> float:
    """Wait for the job's live status to go from RESTARTING to RUNNING; return when it did."""
    last: list[str | None] = [None]

    def edge() -> float | None:
        state = cluster.job_state(jid)
        before, last[0] = last[0], state
        return time.monotonic() if before == "RESTARTING" and state == "RUNNING" else None

    return wait_for(edge, 60, f"job {jid} going from RESTARTING to RUNNING", interval=0.05)


def sleep_until(moment: float) -> None:
    """Let the monotonic clock reach `moment`: an action timed by the scenario, not a wait."""
    time.sleep(max(0.0, moment - time.monotonic()))


def kill_after_a_restart(watch: RestartWatch, cluster: FlinkCluster) -> int:
    """Kill the JobManager `KILL_AFTER_RUNNING_S` after a RESTARTING -> RUNNING edge; return
    Flink's count then. It is read `COUNT_READ_AFTER_RUNNING_S` after the edge, and trusted only
    one above the previous cycle's, read alike (a stale metric would not move by exactly one)."""
    deadline = time.monotonic() + 120
    previous: int | None = None
    while time.monotonic() < deadline:
        edge = running_edge(cluster, watch.jid)
        sleep_until(edge + COUNT_READ_AFTER_RUNNING_S)
        try:
            count = cluster.num_restarts(watch.jid)
        except (OSError, FlinkRestError):
            count = None
        if (
            count is not None
            and previous is not None
            and count == previous + 1
            and time.monotonic() < edge + KILL_AFTER_RUNNING_S
        ):
            sleep_until(edge + KILL_AFTER_RUNNING_S)
            cluster.kill_jobmanager()
            return count
        previous = count
    raise AssertionError(f"no restart cycle with a fresh count to kill in: {watch.report()}")


def fail_over(
    watch: RestartWatch, cluster: FlinkCluster, daemon: ProbeDaemon, kill: Kill
) -> tuple[int, int, Sample]:
    """Kill the JobManager with `kill`, start a new one, and follow the daemon until it counts
    the new epoch. Returns Flink's count at the kill, Flink's first count after the failover,
    and the daemon's first UNKNOWN sample."""
    start_before = cluster.start_time(watch.jid)
    assert start_before is not None
    killed_at = kill(watch, cluster)
    watch.credit_before += killed_at + 1

    # No JobManager: the daemon shows UNKNOWN and changes nothing else.
    unknown = watch.until(lambda s: s.flink_status == "UNKNOWN", "UNKNOWN while no JobManager runs")
    assert unknown.state == "STARTED"
    assert daemon.metrics().value("flink_probe_target_up", target=TARGET) == 0

    cluster.start_jobmanager(wait=False)
    # Flink recovers the job: same id, a later start-time, numRestarts from 0.
    watch.until(
        lambda s: (start_time_or_none(cluster, watch.jid) or 0) > start_before,
        "Flink to recover the job with a new start-time",
        timeout=120,
    )
    first_after = cluster.wait_for_num_restarts(watch.jid)
    assert first_after == 0
    # The daemon takes the new epoch: the failover counts as one restart.
    watch.until(
        lambda s: (
            s.flink_status in {"RUNNING", "RESTARTING"} and (s.daemon or 0) >= watch.credit_before
        ),
        "the daemon to count the failover",
        timeout=60,
    )
    return killed_at, first_after, unknown


def test_two_failovers_add_up_every_epoch_plus_one_per_failover(
    flink_ha: FlinkWithTestJob, tmp_path: Path, flink_version: str
) -> None:
    cluster = flink_ha.cluster
    began = time.monotonic()
    with ProbeDaemon(tmp_path / "probe", cluster.rest_url) as daemon:
        jid = flink_ha.submit("restart", RESTART_EVERY_MS)
        steady = flink_ha.submit("forever")
        watch = RestartWatch(daemon, cluster, dashed(jid), jid)
        watch.until(lambda s: s.state == "STARTED", "the daemon to discover the job")
        epoch_counts: list[int] = []
        first_counts_after_failover: list[int] = []
        unknown_during_election: list[Sample] = []
        for _ in range(FAILOVERS):
            killed_at, first_after, unknown = fail_over(
                watch, cluster, daemon, kill_jobmanager_when_caught_up
            )
            # The kill came once the daemon had credited Flink's count: it shows it unchanged.
            assert unknown.daemon == watch.credit_before - 1, watch.report()
            epoch_counts.append(killed_at)
            first_counts_after_failover.append(first_after)
            unknown_during_election.append(unknown)

        watch.until(
            lambda s: s.flink is not None and s.flink >= 1 and watch.caught_up(s),
            "a restart in the last epoch, counted",
            timeout=120,
        )
        cluster.cancel(jid)
        cluster.cancel(steady)
        job = daemon.wait_settled(dashed(jid))
        final_epoch = cluster.wait_for_num_restarts(jid)
        expected = sum(epoch_counts) + FAILOVERS + final_epoch
        assert state_of(job) == "TERMINATED"
        assert restarts_of(job) == expected, watch.report()

        steady_job = daemon.wait_settled(dashed(steady))
        assert cluster.wait_for_num_restarts(steady) == 0
        assert restarts_of(steady_job) == FAILOVERS
        assert flink_status_of(steady_job) == "CANCELED"
        assert {job["jid"] for job in cluster.jobs_overview()} >= {jid, steady}
        events = events_of(daemon.client, dashed(jid))
        flink_history = cluster.exceptions(jid)["exceptionHistory"]["entries"]
        daemon.terminate()

    # Each failover is an event, and the count steps through every restart and failover.
    failovers = [
        e["spec"]["details"] for e in events if e["metadata"]["name"] == "JOBMANAGER_FAILOVER"
    ]
    assert len(failovers) == FAILOVERS
    chain = steps(events)
    assert chain[0][0] == 0
    assert chain[-1][1] == expected
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chain)), chain
    # The causes seen in the first JobManager are still listed, though Flink's history (its
    # newest JobManager's) has none of them.
    first_epoch = [
        cause
        for e in events
        if e["metadata"]["name"] == "JOB_RESTARTED"
        for cause in e["spec"]["details"]["rootCauses"]
        if cause["timestamp"] < failovers[0]["newStartTime"]
    ]
    assert len(first_epoch) == epoch_counts[0]
    assert all(FAILURE_MESSAGE in cause["message"] for cause in first_epoch)
    assert all(entry["timestamp"] >= failovers[-1]["newStartTime"] for entry in flink_history)

    record_result(
        f"flink-{flink_version} ha-failover x{FAILOVERS} (quiet): flink per epoch "
        f"{[*epoch_counts, final_epoch]} (first after each failover "
        f"{first_counts_after_failover}), expected {expected}, daemon={restarts_of(job)}; "
        f"steady job daemon={restarts_of(steady_job)}; UNKNOWN at "
        f"{[f'{s.at:.1f}s' for s in unknown_during_election]}; {len(watch.samples)} samples, "
        f"{time.monotonic() - began:.1f} s"
    )


def test_failovers_right_after_restarts_lose_no_restart(
    flink_ha: FlinkWithTestJob, tmp_path: Path, flink_version: str
) -> None:
    cluster = flink_ha.cluster
    began = time.monotonic()
    with ProbeDaemon(tmp_path / "probe", cluster.rest_url) as daemon:
        jid = flink_ha.submit("restart", RESTART_EVERY_MS)
        watch = RestartWatch(daemon, cluster, dashed(jid), jid)
        watch.until(lambda s: s.state == "STARTED", "the daemon to discover the job")
        epoch_counts: list[int] = []
        for _ in range(FAILOVERS):
            killed_at, _, _ = fail_over(watch, cluster, daemon, kill_after_a_restart)
            epoch_counts.append(killed_at)

        # Not "caught up" as in the quiet scenario: a count that lost a restart never is.
        watch.until(
            lambda s: s.flink is not None and s.flink >= 1, "a restart in the last epoch", 120
        )
        cluster.cancel(jid)
        job = daemon.wait_settled(dashed(jid))
        final_epoch = cluster.wait_for_num_restarts(jid)
        expected = sum(epoch_counts) + FAILOVERS + final_epoch
        assert state_of(job) == "TERMINATED"
        assert restarts_of(job) == expected, watch.report()
        daemon.terminate()

    record_result(
        f"flink-{flink_version} ha-failover x{FAILOVERS} ({KILL_AFTER_RUNNING_S:g} s after "
        f"RESTARTING -> RUNNING): flink per epoch {[*epoch_counts, final_epoch]}, expected "
        f"{expected}, daemon={restarts_of(job)}; highest sampled {watch.highest}; "
        f"{len(watch.samples)} samples, {time.monotonic() - began:.1f} s"
    )
