"""A daemon's leases against a real PostgreSQL store: what it holds, when it stops holding."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import anyio

from probe._runtime.ownership import LeaseChanges, Ownership
from probe._store.postgres import PostgresStore
from probe._store.sqlite import SQLiteStore

TTL = 30.0


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_claim_takes_free_leases_and_renews_them_unchanged(
    open_pg: Callable[[str], PostgresStore],
) -> None:
    ownership = Ownership(open_pg("a"), TTL, margin=1.0)

    first = await ownership.claim(["orders", "payments"])
    again = await ownership.claim(["orders", "payments"])

    assert sorted(lease.target for lease in first.acquired) == ["orders", "payments"]
    assert first.lost == frozenset()
    assert not again  # renewed: nothing to load or stop
    assert ownership.held == {"orders", "payments"}
    assert ownership.fences() == {lease.target: lease.token for lease in first.acquired}
    assert (ownership.settled, ownership.reachable, ownership.takeovers) == (True, True, 0)


async def test_another_instance_gets_nothing_while_the_holder_renews(
    open_pg: Callable[[str], PostgresStore],
) -> None:
    holder = Ownership(open_pg("a"), TTL)
    other = Ownership(open_pg("b"), TTL)
    await holder.claim(["orders"])

    changes = await other.claim(["orders"])

    assert not changes
    assert other.held == frozenset()
    assert other.settled  # it knows it holds nothing


async def test_a_lease_is_given_up_its_margin_before_it_ends_on_the_holders_own_clock(
    open_pg: Callable[[str], PostgresStore],
) -> None:
    clock = Clock()
    ownership = Ownership(open_pg("a"), TTL, margin=1.0, clock=clock)
    await ownership.claim(["orders"])

    clock.now += TTL - 1.0 - 0.001
    assert ownership.holds("orders")
    clock.now += 0.001
    assert not ownership.holds("orders")
    assert ownership.fences() == {}
    assert ownership.held == frozenset()


async def test_a_failed_claim_keeps_the_leases_until_their_deadline(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore.open(tmp_path / "state.db")
    ownership = Ownership(store, TTL, clock=clock)
    await ownership.claim(["orders"])
    store.close()  # every call fails from now on

    failed = await ownership.claim(["orders"])

    assert not failed
    assert (ownership.reachable, ownership.held) == (False, frozenset({"orders"}))
    assert "closed" in str(ownership.error)
    clock.now += TTL
    expired = await ownership.claim(["orders"])
    assert expired == LeaseChanges(lost=frozenset({"orders"}))
    assert ownership.held == frozenset()


async def test_a_released_lease_is_taken_over_at_the_next_claim(
    open_pg: Callable[[str], PostgresStore],
) -> None:
    holder = Ownership(open_pg("a"), TTL)
    successor = Ownership(open_pg("b"), TTL)
    [held] = (await holder.claim(["orders"])).acquired
    await successor.claim(["orders"])

    await holder.release()
    [taken] = (await successor.claim(["orders"])).acquired

    assert (taken.target, taken.taken_over) == ("orders", True)
    assert taken.token > held.token
    assert successor.takeovers == 1
    assert holder.held == frozenset()


async def test_a_lease_another_instance_holds_now_is_lost(
    open_pg: Callable[[str], PostgresStore],
) -> None:
    """The holder paused past its lease: the successor took it; the holder learns at its claim."""
    clock = Clock()
    holder = Ownership(open_pg("a"), 0.5, clock=clock)
    successor = Ownership(open_pg("b"), TTL)
    await holder.claim(["orders"])
    await anyio.sleep(0.6)  # the lease ends in the database
    await successor.claim(["orders"])

    changes = await holder.claim(["orders"])

    assert changes == LeaseChanges(lost=frozenset({"orders"}))
    assert holder.held == frozenset()


async def test_fenced_out_targets_are_lost_at_once(
    open_pg: Callable[[str], PostgresStore],
) -> None:
    ownership = Ownership(open_pg("a"), TTL)
    seen: list[LeaseChanges] = []
    applied = anyio.Event()

    async def apply(changes: LeaseChanges) -> None:
        seen.append(changes)
        applied.set()

    await ownership.claim(["orders", "payments"])
    async with anyio.create_task_group() as tg:
        # No periodic claim after the first one: only the fencing can change anything.
        tg.start_soon(ownership.run, lambda: ["orders", "payments"], apply, lambda: math.inf)
        await anyio.sleep(0.05)
        ownership.fenced_out(["orders"])
        with anyio.fail_after(5):
            await applied.wait()
        tg.cancel_scope.cancel()

    assert seen == [LeaseChanges(lost=frozenset({"orders"}))]
    assert ownership.held == {"payments"}


async def test_the_loop_claims_every_period_and_stops_an_expired_target(tmp_path: Path) -> None:
    """Claims fail (the store is gone): the lease is lost when its deadline passes, not later."""
    store = SQLiteStore.open(tmp_path / "state.db")
    ownership = Ownership(store, 0.3)
    await ownership.claim(["orders"])
    store.close()
    lost_at: list[float] = []
    lost = anyio.Event()

    async def apply(changes: LeaseChanges) -> None:
        if "orders" in changes.lost:
            lost_at.append(anyio.current_time())
            lost.set()

    started = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ownership.run, lambda: ["orders"], apply, lambda: 10.0)
        with anyio.fail_after(5):
            await lost.wait()
        tg.cancel_scope.cancel()

    assert 0.25 <= lost_at[0] - started <= 0.5


async def test_a_single_owners_leases_never_end(tmp_path: Path) -> None:
    clock = Clock()
    with SQLiteStore.open(tmp_path / "state.db") as store:
        ownership = Ownership(store, math.inf, clock=clock)
        await ownership.claim(["orders"])
        clock.now += 1e9

        assert ownership.holds("orders")
        assert not await ownership.claim(["orders"])
