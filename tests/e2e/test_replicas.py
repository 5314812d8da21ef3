"""Daemons sharing one PostgreSQL store: leases, takeovers, fencing, and the store failing.

Every daemon is a `flink-probe run` subprocess (so it can be killed, stopped and signalled for
real) on the test's own database of the session's private PostgreSQL server; the clusters are
the fake Flink kit's, served from a thread of the test. The scenarios on a real Flink are in
tests/real/test_replicas_real.py; the thirty-target one stays here (30 real clusters do not fit).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import dashed, target, wait_until_sync
from fleet import WAIT, Fleet, Replica, Samples, count_reached, writes_by
from postgres_cluster import Database, PostgresCluster

from probe.testing import FakeCluster, FakeFlinkServer, serve_in_thread

pytestmark = pytest.mark.slow

INTERVAL = 0.4
LEASE_TTL = 1.2


@pytest.fixture
def fleet(tmp_path: Path, postgres_database: Database) -> Iterator[Fleet]:
    with Fleet(tmp_path, postgres_database, INTERVAL, LEASE_TTL) as fleet:
        yield fleet


@pytest.fixture
def cluster() -> Iterator[tuple[FakeCluster, FakeFlinkServer]]:
    fake = FakeCluster()
    with serve_in_thread(fake) as server:
        yield fake, server


def restart_until_counted(
    cluster: FakeCluster, jid: str, replica: Replica, times: int, *, within: float = WAIT
) -> int:
    """Restart the job `times` times, one a round, then wait until `replica` exports Flink's
    count; returns it."""
    for _ in range(times):
        cluster.restart(jid)
        time.sleep(INTERVAL)
    count = cluster.job(jid).num_restarts
    return count_reached(replica, dashed(jid), count, within=within)


def test_a_killed_holders_target_is_taken_over_and_counted_on(
    fleet: Fleet, cluster: tuple[FakeCluster, FakeFlinkServer]
) -> None:
    fake, server = cluster
    jid = fake.submit("orders")
    job_id = dashed(jid)
    targets = [target("prod", server.url)]
    a = fleet.start("a", targets)
    wait_until_sync(lambda: a.holds("prod"), "a to hold prod", WAIT)
    b = fleet.start("b", targets)
    assert not b.holds("prod")  # the holder keeps its lease when another instance joins

    with Samples([a, b], job_id) as samples:
        restart_until_counted(fake, jid, a, 3)
        wait_until_sync(lambda: b.served_restarts(job_id) == 3, "b to serve a's count", WAIT)

        a.kill9()
        killed = time.monotonic()
        fake.restart(jid, 2)  # while nobody holds the target
        wait_until_sync(lambda: b.holds("prod"), "b to take prod over", WAIT)
        took = time.monotonic() - killed
        final = restart_until_counted(fake, jid, b, 2)
        wait_until_sync(lambda: b.served_restarts(job_id) == final, "b's API to catch up", WAIT)

    assert final == 7
    assert took <= LEASE_TTL + 2 * INTERVAL, f"taken over after {took:.2f} s"
    assert b.takeovers() == 1.0
    samples.assert_never_down()
    assert {"a api", "a metrics", "b api", "b metrics"} <= set(samples.readings)
    secret = fleet.database.password
    assert secret not in a.process.stderr + b.process.stderr
    assert secret not in b.process.client.request("/metrics").text


def test_a_paused_holder_writes_nothing_once_resumed_and_drops_the_target(
    fleet: Fleet, cluster: tuple[FakeCluster, FakeFlinkServer], postgres_cluster: PostgresCluster
) -> None:
    fake, server = cluster
    jid = fake.submit("orders")
    job_id = dashed(jid)
    targets = [target("prod", server.url)]
    a = fleet.start("a", targets)
    wait_until_sync(lambda: a.holds("prod"), "a to hold prod", WAIT)
    b = fleet.start("b", targets)
    restart_until_counted(fake, jid, a, 2)
    writes = writes_by(postgres_cluster, fleet.database)

    a.pause()
    with Samples([b], job_id) as samples:
        fake.restart(jid)  # a's rounds cannot see this one; b's will
        wait_until_sync(lambda: b.holds("prod"), "b to take prod over", WAIT)
        fake.restart(jid, 2)
        count_reached(b, job_id, 5)
    a.resume()

    wait_until_sync(
        lambda: a.exported_restarts(job_id) is None, "a's /metrics to drop the Job", WAIT
    )
    assert a.metrics().series("flink_probe_job_restarts_total") == []
    fake.restart(jid)
    count_reached(b, job_id, 6)
    assert not a.holds("prod")
    assert a.exported_restarts(job_id) is None
    assert writes("a") == 0
    assert writes("b") > 0
    assert a.job(job_id) is not None  # still served, from the store
    samples.assert_never_down()


def test_a_replaced_sidecar_continues_the_count_from_the_store(
    fleet: Fleet,
) -> None:
    """Daemon a and its JobManager die together (a pod); the new pod's daemon b, with an empty
    disk and the same target name, counts on, the JobManager's restart included."""
    fake = FakeCluster()
    jid = fake.submit("orders")
    job_id = dashed(jid)
    with serve_in_thread(fake) as old_jobmanager:
        a = fleet.start("pod-1", [target("orders", old_jobmanager.url)])
        restart_until_counted(fake, jid, a, 3)
        a.kill9()
    fake.jobmanager_restart(keep_jobs=True)  # HA: the job recovers in the new JobManager
    with serve_in_thread(fake) as new_jobmanager:
        b = fleet.start("pod-2", [target("orders", new_jobmanager.url)])
        wait_until_sync(lambda: b.holds("orders"), "pod-2 to hold orders", WAIT)
        assert b.takeovers() == 1.0
        fake.restart(jid, 2)
        count_reached(b, job_id, 3 + 1 + 2)


def test_a_restart_of_postgresql_loses_nothing_exposed(
    fleet: Fleet, cluster: tuple[FakeCluster, FakeFlinkServer], postgres_cluster: PostgresCluster
) -> None:
    fake, server = cluster
    jid = fake.submit("orders")
    job_id = dashed(jid)
    # A lease that outlives the outage: probing goes on meanwhile.
    a = fleet.start("a", [target("prod", server.url)], lease_ttl="60s")
    restart_until_counted(fake, jid, a, 2)

    with Samples([a], job_id) as samples:
        postgres_cluster.stop()
        try:
            wait_until_sync(
                lambda: a.metrics().value("flink_probe_store_up") == 0.0, "store_up 0", WAIT
            )
            fake.restart(jid, 3)
            probes = a.metrics().total("flink_probe_probes_total", target="prod")
            wait_until_sync(
                lambda: a.metrics().total("flink_probe_probes_total", target="prod") > probes + 2,
                "probing to go on",
                WAIT,
            )
            assert a.exported_restarts(job_id) == 2.0  # not committed: not shown
            assert a.holds("prod")
        finally:
            postgres_cluster.start()
        wait_until_sync(
            lambda: a.metrics().value("flink_probe_store_up") == 1.0, "store_up 1", WAIT
        )
        count_reached(a, job_id, 5)
    samples.assert_never_down()
    assert a.process.client.readyz() == 200


def test_three_replicas_share_thirty_targets_and_take_over_a_stopped_ones_at_once(
    fleet: Fleet, cluster: tuple[FakeCluster, FakeFlinkServer]
) -> None:
    _, server = cluster
    targets = [target(f"t{index:02}", server.url, discover=False) for index in range(30)]
    replicas = [fleet.start(name, targets) for name in ("a", "b", "c")]

    def shares() -> list[int] | None:
        held = [replica.held() for replica in replicas]
        return held if sum(held) == 30 and all(9 <= n <= 11 for n in held) else None

    wait_until_sync(shares, "each replica to hold 9 to 11 leases", WAIT)
    a, b, c = replicas
    a.terminate()
    [released] = a.logged_at("leases released")
    wait_until_sync(lambda: b.held() + c.held() == 30, "b and c to hold every lease", WAIT)
    acquired = max(b.logged_at("lease acquired") + c.logged_at("lease acquired"))
    # Within one claim period, plus the time a claim takes on a busy machine.
    assert acquired - released <= INTERVAL + 0.2


def test_targets_from_a_shared_targets_file_are_leased_like_configured_ones(
    fleet: Fleet, tmp_path: Path
) -> None:
    clusters = [FakeCluster(), FakeCluster()]
    jids = [cluster.submit(f"job-{index}") for index, cluster in enumerate(clusters)]
    with serve_in_thread(clusters[0]) as one, serve_in_thread(clusters[1]) as two:
        names = [f"127.0.0.1:{server.port}" for server in (one, two)]
        targets_file = tmp_path / "flink.json"
        targets_file.write_text(json.dumps([{"targets": [one.url, two.url]}]))
        settings: dict[str, object] = {"targets_files": [str(targets_file)]}
        a = fleet.start("a", [], settings)
        b = fleet.start("b", [], settings)

        def split() -> bool:
            holders = [[r.name for r in (a, b) if r.holds(name)] for name in names]
            return sorted(map(len, holders)) == [1, 1] and a.held() == b.held() == 1

        wait_until_sync(split, "each file target held by one replica, one each", WAIT)

        def served_everywhere() -> bool:
            return all(r.job(dashed(jid)) for r in (a, b) for jid in jids)

        wait_until_sync(served_everywhere, "both replicas to serve both Jobs", WAIT)

        a.terminate()
        wait_until_sync(lambda: b.held() == 2, "b to take a's file target over", WAIT)
