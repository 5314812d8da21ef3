"""Replicas and sidecars sharing one real PostgreSQL store, on a real Flink 2.3.0.

Every daemon is a `flink-probe run` subprocess (tests/support/fleet.py) on the test's own
database of the session's private PostgreSQL server, probing the session's real cluster (`flink`)
or its ZooKeeper HA cluster (`flink_ha`). Counts are checked against Flink's: `RestartWatch`
samples one replica's API (committed data, from the store) and Flink's `numRestarts` just after
it, and `Samples` reads every replica's API and `/metrics` to check that none ever goes down.
Three replicas sharing thirty targets stay on the fake kit (tests/e2e/test_replicas.py): thirty
real clusters do not fit on a test machine.

The HA scenarios kill the JobManager as test_ha_failover.py does, when Flink's count of the epoch
is a number we know: once the fleet shows Flink's current count f, and within `KILL_WITHIN_S` of
a read of Flink that still shows f. The epoch's credit is then exactly f, and the final count
(job cancelled, count settled) must be f + 1 (the failover) + Flink's count of the new epoch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import dashed, flink_status_of, restarts_of, state_of, target, wait_until_sync
from fleet import WAIT, Fleet, Replica, Samples, writes_by
from postgres_cluster import Database, PostgresCluster

from .cluster import FlinkCluster, FlinkRestError
from .daemon import (
    METRICS_MAX_AGE,
    OVERVIEW_MAX_AGE,
    TARGET,
    RestartWatch,
    kill_jobmanager_when_caught_up,
    record_result,
    wait_settled,
)
from .flinkdist import FLINK_2_VERSION
from .testjob import FlinkWithTestJob

pytestmark = [
    pytest.mark.realflink,
    pytest.mark.slow,
    # Leases and fencing do not depend on the Flink version: the newest one only.
    pytest.mark.parametrize(
        "flink_version", [pytest.param(FLINK_2_VERSION, id="flink-2.3.0")], indirect=True
    ),
]

INTERVAL = 0.5
LEASE_TTL = 1.5
RESTART_EVERY_MS = 1500
"""The job fails 1.5 s after every (re)start: a restart about every 2 s."""
HA_RESTART_EVERY_MS = 3000
"""Slower under HA, so the fleet is caught up with Flink for a while in every cycle."""
FENCED_EVENTS = frozenset(
    {"lease lost; target stopped", "another instance holds these targets now; dropping them"}
)


@pytest.fixture
def fleet(tmp_path: Path, postgres_database: Database) -> Iterator[Fleet]:
    with Fleet(tmp_path, postgres_database, INTERVAL, LEASE_TTL, timeout=INTERVAL) as fleet:
        yield fleet


def flink_target(name: str, url: str) -> dict[str, object]:
    """A target with the lags of the harness's clusters."""
    return target(name, url, overview_max_age=OVERVIEW_MAX_AGE, metrics_max_age=METRICS_MAX_AGE)


def holding(replica: Replica, target_name: str = TARGET) -> Replica:
    """Wait until `replica` holds the target's lease; returns it."""
    wait_until_sync(
        lambda: replica.holds(target_name), f"{replica.name} to hold {target_name}", WAIT
    )
    return replica


def counted(watch: RestartWatch, at_least: int, what: str) -> int:
    """Wait until the watched replica serves `at_least` restarts; returns what it serves."""
    taken = watch.until(lambda s: (s.daemon or 0) >= at_least, what)
    assert taken.daemon is not None
    return taken.daemon


def settled_count(watch: RestartWatch, *jids: str) -> tuple[dict[str, Any], int]:
    """Cancel the watched job (and `jids`), wait until the watched replica serves its count
    settled; returns that Job and Flink's final count of the current epoch."""
    cluster = watch.cluster
    for jid in (watch.jid, *jids):
        cluster.cancel(jid)
    job = wait_settled(watch.daemon, watch.job_id)
    assert state_of(job) == "TERMINATED"
    return job, cluster.wait_for_num_restarts(watch.jid)


def stored(postgres: PostgresCluster, database: Database, query: str, *params: object) -> object:
    """The one value `query` selects in the fleet's database."""
    with postgres.admin(database.name) as admin:
        row = admin.execute(query, params).fetchone()
    assert row is not None, query
    return row[0]


def new_epoch_counted(watch: RestartWatch, cluster: FlinkCluster, start_before: int) -> None:
    """Start a JobManager; wait until Flink recovers the job (a later start-time), the fleet
    counts the failover, and then a restart of the new epoch."""
    cluster.start_jobmanager(wait=False)

    def recovered() -> bool:
        try:
            return (cluster.start_time(watch.jid) or 0) > start_before
        except (OSError, FlinkRestError):
            return False  # no JobManager yet, or a leader election (503)

    watch.until(lambda _: recovered(), "Flink to recover the job in a new epoch", timeout=120)
    watch.until(
        lambda s: (
            s.flink_status in {"RUNNING", "RESTARTING"} and (s.daemon or 0) >= watch.credit_before
        ),
        "the fleet to count the failover",
    )
    watch.until(
        lambda s: s.flink is not None and s.flink >= 1 and watch.caught_up(s),
        "a restart of the new epoch, counted",
        timeout=120,
    )


def test_a_killed_holders_target_is_taken_over_and_ends_at_flinks_count(
    flink: FlinkWithTestJob, fleet: Fleet
) -> None:
    """Scenario 1: two replicas, one target; kill -9 the holder."""
    cluster = flink.cluster
    targets = [flink_target(TARGET, cluster.rest_url)]
    a = holding(fleet.start("a", targets))
    b = fleet.start("b", targets)
    jid = flink.submit("restart", RESTART_EVERY_MS)
    job_id = dashed(jid)
    watch = RestartWatch(b, cluster, job_id, jid)

    with Samples([a, b], job_id, every=0.05) as samples:
        at_kill = counted(watch, 2, "a's count of 2 restarts, served by b")
        assert not b.holds(TARGET)
        assert a.exported_restarts(job_id) is not None
        killed = time.time()
        a.kill9()
        holding(b)
        counted(watch, at_kill + 2, "b to count on")
        job, final = settled_count(watch)

    [acquired] = b.logged_at("lease acquired")
    took = acquired - killed
    assert took <= LEASE_TTL + 2 * INTERVAL, f"taken over {took:.2f} s after the kill"
    assert b.takeovers() == 1.0
    assert restarts_of(job) == final, watch.report()
    assert b.exported_restarts(job_id) == final
    samples.assert_never_down()
    assert {"a api", "a metrics", "b api", "b metrics"} <= set(samples.readings)
    record_result(
        f"flink-{cluster.version} replicas kill -9: taken over after {took:.2f} s; "
        f"daemon={restarts_of(job)} flink={final}; {len(watch.samples)} samples"
    )


def test_a_paused_holder_is_fenced_out_and_writes_nothing(
    flink: FlinkWithTestJob, fleet: Fleet, postgres_cluster: PostgresCluster
) -> None:
    """Scenario 2: SIGSTOP the holder past its lease while the job restarts, then SIGCONT."""
    cluster = flink.cluster
    targets = [flink_target(TARGET, cluster.rest_url)]
    a = holding(fleet.start("a", targets))
    b = fleet.start("b", targets)
    jid = flink.submit("restart", RESTART_EVERY_MS)
    job_id = dashed(jid)
    watch = RestartWatch(b, cluster, job_id, jid)
    at_pause = counted(watch, 1, "a's count of a restart, served by b")
    assert a.exported_restarts(job_id) is not None
    writes = writes_by(postgres_cluster, fleet.database)

    a.pause()
    with Samples([b], job_id, every=0.05) as samples:
        holding(b)
        # a sleeps through these restarts, and through its lease.
        counted(watch, at_pause + 2, "b to count two restarts more")
        a.resume()
        wait_until_sync(
            lambda: a.exported_restarts(job_id) is None, "a's /metrics to drop the Job", WAIT
        )
        assert a.metrics().series("flink_probe_job_restarts_total") == []
        counted(watch, watch.highest + 1, "b to count on after a resumed")
        job, final = settled_count(watch)

    assert not a.holds(TARGET)
    assert writes("a") == 0
    assert writes("b") > 0
    dropped = [
        line
        for line in a.log_lines()
        if line.get("event") in FENCED_EVENTS
        and TARGET in (line.get("target"), *line.get("targets", ()))
    ]
    assert dropped, "a did not log that it dropped the target"
    database = fleet.database
    lease_holder = "SELECT holder FROM leases WHERE target = %s"
    assert stored(postgres_cluster, database, lease_holder, TARGET) == "b"
    observed = "SELECT observed FROM jobs WHERE job_id = %s"
    assert stored(postgres_cluster, database, observed, job_id) == final
    assert restarts_of(job) == final, watch.report()
    assert restarts_of(a.job(job_id)) == final  # a serves b's count, from the store
    samples.assert_never_down()
    record_result(
        f"flink-{cluster.version} replicas SIGSTOP: a wrote {writes('a')} rows, b {writes('b')}; "
        f"daemon={restarts_of(job)} flink={final}"
    )


def test_a_failover_during_a_handover_is_counted_once(
    flink_ha: FlinkWithTestJob, fleet: Fleet
) -> None:
    """Scenario 3: the JobManager killed and the holder stopped (SIGTERM) at the same moment;
    the successor sees the new epoch."""
    cluster = flink_ha.cluster
    targets = [flink_target(TARGET, cluster.rest_url)]
    a = holding(fleet.start("a", targets))
    b = fleet.start("b", targets)
    jid = flink_ha.submit("restart", HA_RESTART_EVERY_MS)
    steady = flink_ha.submit("forever")
    job_id = dashed(jid)
    watch = RestartWatch(b, cluster, job_id, jid)
    watch.until(lambda s: s.state == "STARTED", "the fleet to discover the job")
    start_before = cluster.start_time(jid)
    assert start_before is not None

    with Samples([a, b], job_id, every=0.05) as samples:
        killed_at = kill_jobmanager_when_caught_up(watch, cluster, a.terminate)
        watch.credit_before += killed_at + 1
        holding(b)
        watch.until(lambda s: s.flink_status == "UNKNOWN", "b to probe the dead JobManager")
        new_epoch_counted(watch, cluster, start_before)
        job, final_epoch = settled_count(watch, steady)
        steady_job = wait_settled(b, dashed(steady))

    [released] = a.logged_at("leases released")
    [acquired] = b.logged_at("lease acquired")
    handover = acquired - released
    assert handover <= 2 * INTERVAL, f"b took over {handover:.2f} s after a released"
    expected = killed_at + 1 + final_epoch
    assert restarts_of(job) == expected, watch.report()
    assert cluster.wait_for_num_restarts(steady) == 0
    assert restarts_of(steady_job) == 1  # the failover, once
    assert flink_status_of(steady_job) == "CANCELED"
    samples.assert_never_down()
    record_result(
        f"flink-{cluster.version} replicas HA failover during a SIGTERM handover ({handover:.2f} "
        f"s): flink per epoch {[killed_at, final_epoch]}, expected {expected}, "
        f"daemon={restarts_of(job)}; steady job daemon={restarts_of(steady_job)}"
    )


def test_a_replaced_sidecar_continues_the_count_from_the_store(
    flink_ha: FlinkWithTestJob, fleet: Fleet
) -> None:
    """Scenario 4: sidecar pod-1 (target `orders`) dies with its JobManager; pod-2's sidecar,
    with an empty disk and the same target name, counts on, the failover included."""
    cluster = flink_ha.cluster
    orders = [flink_target("orders", cluster.rest_url)]
    old = fleet.start("pod-1", orders)
    jid = flink_ha.submit("restart", HA_RESTART_EVERY_MS)
    steady = flink_ha.submit("forever")
    job_id = dashed(jid)
    watch = RestartWatch(old, cluster, job_id, jid)
    watch.until(lambda s: s.state == "STARTED", "pod-1 to discover the job")
    start_before = cluster.start_time(jid)
    assert start_before is not None

    killed_at = kill_jobmanager_when_caught_up(watch, cluster, old.kill9)
    watch.credit_before += killed_at + 1
    new = fleet.start("pod-2", orders)  # in a new directory: an empty disk
    watch.daemon = new
    with Samples([new], job_id, every=0.05) as samples:
        holding(new, "orders")
        new_epoch_counted(watch, cluster, start_before)
        job, final_epoch = settled_count(watch, steady)
        steady_job = wait_settled(new, dashed(steady))

    assert new.takeovers() == 1.0
    expected = killed_at + 1 + final_epoch
    assert restarts_of(job) == expected, watch.report()
    assert restarts_of(steady_job) == 1
    samples.assert_never_down()
    assert samples.readings["pod-2 api"][0] >= killed_at  # from the store, not from 0
    record_result(
        f"flink-{cluster.version} sidecar replaced with its JobManager: flink per epoch "
        f"{[killed_at, final_epoch]}, expected {expected}, daemon={restarts_of(job)}"
    )


def test_a_restart_of_postgresql_loses_nothing_exposed(
    flink: FlinkWithTestJob, fleet: Fleet, postgres_cluster: PostgresCluster
) -> None:
    """Scenario 5: PostgreSQL stopped and started again while the job restarts."""
    cluster = flink.cluster
    # A lease that outlives the outage: probing goes on meanwhile.
    a = fleet.start("a", [flink_target(TARGET, cluster.rest_url)], lease_ttl="60s")
    jid = flink.submit("restart", RESTART_EVERY_MS)
    job_id = dashed(jid)
    watch = RestartWatch(a, cluster, job_id, jid)
    counted(watch, 1, "a restart, counted")

    with Samples([a], job_id, every=0.05) as samples:
        postgres_cluster.stop()
        try:
            wait_until_sync(
                lambda: a.metrics().value("flink_probe_store_up") == 0.0, "store_up 0", WAIT
            )
            frozen = a.exported_restarts(job_id)
            assert frozen is not None
            flink_before = cluster.wait_for_num_restarts(jid)
            probes = a.metrics().total("flink_probe_probes_total", target=TARGET)
            cluster.wait_for_num_restarts(jid, minimum=flink_before + 2)
            assert a.metrics().total("flink_probe_probes_total", target=TARGET) > probes + 2
            assert a.exported_restarts(job_id) == frozen  # not committed: not shown
            assert a.holds(TARGET)
        finally:
            postgres_cluster.start()
        wait_until_sync(
            lambda: a.metrics().value("flink_probe_store_up") == 1.0, "store_up 1", WAIT
        )
        watch.until(watch.caught_up, "a to show Flink's count again")
        job, final = settled_count(watch)

    assert restarts_of(job) == final, watch.report()
    assert a.exported_restarts(job_id) == final
    samples.assert_never_down()
    assert a.process.client.readyz() == 200
    record_result(
        f"flink-{cluster.version} PostgreSQL restarted: shown {frozen} while down; "
        f"daemon={restarts_of(job)} flink={final}"
    )
