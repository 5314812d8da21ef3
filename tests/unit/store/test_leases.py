"""Leases and fencing: who probes which target, and why a former holder can never write over
its successor. The assignment is checked on its own; the rest on a real PostgreSQL server and,
where a single owner makes it meaningful, on SQLite."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from postgres_cluster import Database, PostgresCluster

from probe._store import FencedOut, Lease, Store, StoredJob
from probe._store.leases import LeaseRow, assign, fair_share, plan_claim
from probe._store.postgres import PostgresStore
from probe._store.sqlite import SQLiteStore

DEADLINE_SECONDS = 20.0


def job(
    index: int, resource_version: int = 1, *, target: str = "orders", observed: int = 0
) -> StoredJob:
    return StoredJob(
        job_id=f"3f1da3c8-6f22-430f-9200-{index:012x}",
        namespace="default",
        state="STARTED",
        resource_version=resource_version,
        document=json.dumps({"index": index, "observed": observed, "rv": resource_version}),
        target=target,
        observed=observed,
    )


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def targets(count: int) -> frozenset[str]:
    return frozenset(f"target-{index:02d}" for index in range(count))


# --- the assignment, on its own -----------------------------------------------------------

INSTANCES = st.sampled_from("abcdefg")
TARGETS = st.sampled_from(sorted(targets(12)))
WANTS = st.dictionaries(INSTANCES, st.frozensets(TARGETS, max_size=10), min_size=1)


def shares(wants: Mapping[str, frozenset[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for wanted in wants.values():
        for target in wanted:
            counts[target] = counts.get(target, 0) + 1
    return {instance: fair_share(wanted, counts) for instance, wanted in wants.items()}


def test_the_fair_share_splits_one_configuration_and_gives_a_sidecar_its_own() -> None:
    replicas = {name: targets(30) for name in "abc"}
    assert shares(replicas) == {"a": 10, "b": 10, "c": 10}

    sidecars = {name: frozenset({name}) for name in ("orders", "payments")}
    assert shares(sidecars) == {"orders": 1, "payments": 1}

    both = {"r1": targets(10), "r2": targets(10), **sidecars}
    assert shares(both) == {"r1": 5, "r2": 5, "orders": 1, "payments": 1}


@given(WANTS, st.dictionaries(TARGETS, INSTANCES))
def test_every_wanted_target_gets_one_wanting_holder_within_the_shares(
    wants: dict[str, frozenset[str]], holders: dict[str, str]
) -> None:
    assignment = assign(wants, holders)

    assert set(assignment) == set().union(*wants.values())
    assert all(target in wants[holder] for target, holder in assignment.items())
    limits = shares(wants)
    for instance in wants:
        assert sum(holder == instance for holder in assignment.values()) <= limits[instance]
    # A complete assignment is kept as it is: nobody's lease moves without a reason.
    assert assign(wants, assignment) == assignment


def settle(
    wants: Mapping[str, frozenset[str]], stored: dict[str, LeaseRow], order: Sequence[str]
) -> int:
    """Run claim rounds (plan_claim on the stored leases) until one changes nothing; return
    how many changed something."""
    for rounds in range(10):
        changed = False
        for instance in order:
            plan = plan_claim(instance, wants, stored)
            for target in plan.give_back:
                stored[target] = LeaseRow(instance, 0, expired=True, released=True)
            for target in plan.take:
                stored[target] = LeaseRow(instance, 0, expired=False, released=False)
            changed = changed or bool(plan.give_back or plan.take)
        if not changed:
            return rounds
    raise AssertionError(f"claims did not settle: {wants} {stored}")


@given(WANTS, WANTS, st.randoms(use_true_random=False))
def test_claims_settle_in_two_rounds_and_cover_every_target_as_instances_come_and_go(
    before: dict[str, frozenset[str]], after: dict[str, frozenset[str]], random: Random
) -> None:
    stored: dict[str, LeaseRow] = {}
    for wants in (before, after):
        # Leases of instances that are gone have expired.
        for target, row in stored.items():
            if row.holder not in wants:
                stored[target] = LeaseRow(row.holder, 0, expired=True, released=row.released)
        order = sorted(wants)
        random.shuffle(order)

        # A lease given back is taken at the next claim of the instance it is meant for.
        assert settle(wants, stored, order) <= 2

        held = {target: row.holder for target, row in stored.items() if not row.released}
        assert set(held) >= set().union(*wants.values())
        limits = shares(wants)
        for instance, wanted in wants.items():
            mine = {target for target, holder in held.items() if holder == instance}
            assert mine <= wanted
            assert len(mine) <= limits[instance]


# --- lease semantics on both backends -----------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """One instance's store on each backend."""
    if request.param == "sqlite":
        with SQLiteStore.open(tmp_path / "state.db") as sqlite_store:
            yield sqlite_store
        return
    database: Database = request.getfixturevalue("postgres_database")
    with PostgresStore.open(database.url, instance="a", password=database.password) as pg_store:
        yield pg_store


def test_a_lease_is_renewed_under_its_token_and_retaken_under_a_larger_one(store: Store) -> None:
    (first,) = store.claim({"orders"}, ttl=30)
    assert first == Lease("orders", first.token, 30, renewed=False, taken_over=False)
    assert store.claim({"orders"}, ttl=30) == (
        Lease("orders", first.token, 30, renewed=True, taken_over=False),
    )

    store.release({"orders"})
    (again,) = store.claim({"orders"}, ttl=30)

    assert again.token > first.token
    assert not again.renewed


def test_a_write_under_a_stale_token_is_refused_and_nothing_of_its_batch_lands(
    store: Store,
) -> None:
    (old,) = store.claim({"orders"}, ttl=30)
    store.write_batch([job(1, observed=1)], {"orders": old.token})
    store.release()
    (new,) = store.claim({"orders"}, ttl=30)

    with pytest.raises(FencedOut) as refused:
        store.write_batch(
            [job(2, target="payments"), job(1, resource_version=2, observed=2)],
            {"orders": old.token},
        )

    assert refused.value.targets == {"orders"}
    assert "\n" not in str(refused.value)
    assert store.load() == [job(1, observed=1)]
    store.write_batch([job(1, resource_version=2, observed=2)], {"orders": new.token})
    assert store.load() == [job(1, resource_version=2, observed=2)]


def test_a_stored_count_never_goes_down_with_a_stale_token_or_without_one(store: Store) -> None:
    (old,) = store.claim({"orders"}, ttl=30)
    store.release()
    (current,) = store.claim({"orders"}, ttl=30)
    store.write_batch([job(1, resource_version=3, observed=5)], {"orders": current.token})

    with pytest.raises(FencedOut):
        store.write_batch([job(1, resource_version=4, observed=2)], {"orders": old.token})
    store.write_batch([job(1, resource_version=4, observed=2)])
    store.write_batch([job(1, resource_version=4, observed=2)], {"orders": current.token})

    assert store.load() == [job(1, resource_version=3, observed=5)]


def test_a_target_no_longer_wanted_is_released(store: Store) -> None:
    first = store.claim({"orders", "payments"}, ttl=30)
    assert [lease.target for lease in first] == ["orders", "payments"]

    assert [lease.target for lease in store.claim({"payments"}, ttl=30)] == ["payments"]
    with pytest.raises(FencedOut):
        store.write_batch([job(1)], {"orders": first[0].token})


def test_the_lone_owner_of_a_sqlite_file_holds_every_target(tmp_path: Path) -> None:
    with SQLiteStore.open(tmp_path / "state.db") as store:
        leases = store.claim(targets(30), ttl=30)
    assert {lease.target for lease in leases} == targets(30)


# --- leases shared by instances, on PostgreSQL --------------------------------------------


def claim_rounds(
    stores: Sequence[PostgresStore], wanted: Mapping[str, frozenset[str]], rounds: int
) -> dict[str, tuple[Lease, ...]]:
    """Every store claims its wanted targets, in turn, ``rounds`` times."""
    held: dict[str, tuple[Lease, ...]] = {}
    for _ in range(rounds):
        for store in stores:
            held[store.instance] = store.claim(wanted[store.instance], ttl=60)
    return held


def assert_each_target_held_once(
    held: Mapping[str, tuple[Lease, ...]], every: frozenset[str]
) -> None:
    leases = [lease for instance_leases in held.values() for lease in instance_leases]
    assert sorted(lease.target for lease in leases) == sorted(every)
    assert len({lease.token for lease in leases}) == len(leases)


def test_replicas_with_one_configuration_split_the_targets(
    open_pg: Callable[[str], PostgresStore],
) -> None:
    first = open_pg("a")
    assert len(first.claim(targets(30), ttl=60)) == 30  # alone, it holds every target

    stores = [first, open_pg("b"), open_pg("c")]
    held = claim_rounds(stores, {store.instance: targets(30) for store in stores}, rounds=3)

    assert {instance: len(leases) for instance, leases in held.items()} == {
        "a": 10,
        "b": 10,
        "c": 10,
    }
    assert_each_target_held_once(held, targets(30))


def test_replicas_claiming_at_the_same_moments_never_share_a_target(
    open_pg: Callable[[str], PostgresStore],
) -> None:
    stores = [open_pg(instance) for instance in "abc"]
    barrier = threading.Barrier(len(stores))
    held: dict[str, tuple[Lease, ...]] = {}

    def claim_rounds_together(store: PostgresStore) -> None:
        for _ in range(4):
            barrier.wait(timeout=DEADLINE_SECONDS)
            held[store.instance] = store.claim(targets(30), ttl=60)

    threads = [threading.Thread(target=claim_rounds_together, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_SECONDS)

    assert {instance: len(leases) for instance, leases in held.items()} == {
        "a": 10,
        "b": 10,
        "c": 10,
    }
    assert_each_target_held_once(held, targets(30))


def test_sidecars_and_replicas_share_one_database(open_pg: Callable[[str], PostgresStore]) -> None:
    wanted = {"r1": targets(10), "r2": targets(10), "orders": frozenset({"orders"})}
    stores = [open_pg(instance) for instance in wanted]

    held = claim_rounds(stores, wanted, rounds=3)

    assert [lease.target for lease in held["orders"]] == ["orders"]
    assert len(held["r1"]) == len(held["r2"]) == 5
    assert_each_target_held_once(held, targets(10) | {"orders"})


def test_the_leases_of_a_stopped_instance_are_taken_at_their_next_claim(
    open_pg: Callable[[str], PostgresStore],
) -> None:
    stores = [open_pg(instance) for instance in "abc"]
    wanted = {store.instance: targets(30) for store in stores}
    held = claim_rounds(stores, wanted, rounds=3)
    stopped = {lease.target: lease.token for lease in held["c"]}

    stores[2].release()  # SIGTERM
    survivors = claim_rounds(stores[:2], wanted, rounds=1)

    assert_each_target_held_once(survivors, targets(30))
    taken = [lease for leases in survivors.values() for lease in leases if lease.target in stopped]
    assert len(taken) == 10
    assert all(lease.taken_over and lease.token > stopped[lease.target] for lease in taken)


def test_an_expired_lease_is_taken_over_and_its_former_holder_fenced_out(
    postgres_cluster: PostgresCluster,
    postgres_database: Database,
    open_pg: Callable[[str], PostgresStore],
) -> None:
    holder, successor = open_pg("a"), open_pg("b")
    (lease,) = holder.claim({"orders"}, ttl=0.5)
    assert successor.claim({"orders"}, ttl=60) == ()  # held, and live

    wait_for(lambda: lease_expired(postgres_cluster, postgres_database, "orders"), "expiry")
    (taken,) = successor.claim({"orders"}, ttl=60)

    assert taken.taken_over
    assert taken.token > lease.token
    with pytest.raises(FencedOut):
        holder.write_batch([job(1, observed=7), job(2, target="payments")], {"orders": lease.token})
    assert successor.load() == []
    assert holder.claim({"orders"}, ttl=60) == ()  # the former holder gets nothing back


def lease_expired(cluster: PostgresCluster, database: Database, target: str) -> bool:
    """Whether the lease's expiry has passed on the database's clock."""
    with cluster.admin(database.name) as admin:
        row = admin.execute(
            "SELECT expires_at <= clock_timestamp() FROM leases WHERE target = %s", (target,)
        ).fetchone()
    return row is not None and row[0] is True


def waiting_on_a_lock(cluster: PostgresCluster, database: Database, instance: str) -> bool:
    with cluster.admin() as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            " AND application_name = %s AND wait_event_type = 'Lock'",
            (database.name, f"flink-probe {instance}"),
        ).fetchone()
    return row == (1,)


def test_a_takeover_waits_for_a_write_begun_under_the_old_token(
    postgres_cluster: PostgresCluster,
    postgres_database: Database,
    open_pg: Callable[[str], PostgresStore],
) -> None:
    holder, successor = open_pg("a"), open_pg("b")
    (lease,) = holder.claim({"orders"}, ttl=0.5)
    written: list[bool] = []
    claimed: list[tuple[Lease, ...]] = []

    def write_under_the_lease() -> None:
        holder.write_batch([job(1, observed=3)], {"orders": lease.token})
        written.append(True)

    def run(call: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=call)
        thread.start()
        return thread

    with postgres_cluster.admin(postgres_database.name) as blocker, blocker.transaction():
        blocker.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")  # holds the write mid-transaction
        write = run(write_under_the_lease)
        wait_for(lambda: waiting_on_a_lock(postgres_cluster, postgres_database, "a"), "the write")
        wait_for(lambda: lease_expired(postgres_cluster, postgres_database, "orders"), "expiry")
        claim = run(lambda: claimed.append(successor.claim({"orders"}, ttl=60)))
        wait_for(lambda: waiting_on_a_lock(postgres_cluster, postgres_database, "b"), "the claim")
        assert not claimed
    write.join(DEADLINE_SECONDS)
    claim.join(DEADLINE_SECONDS)

    assert written == [True]
    ((taken,),) = claimed
    assert taken.token > lease.token
    assert successor.load(["orders"]) == [job(1, observed=3)]  # the successor starts from it
    with pytest.raises(FencedOut):
        holder.write_batch([job(1, resource_version=2, observed=4)], {"orders": lease.token})
