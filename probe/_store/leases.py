"""Who probes which target: the fair share, the balanced assignment, and one claim's plan.

Every target has one lease. The lease is divided equally among the live instances that want
the target; an instance's fair share is the sum of its parts, rounded up. So N replicas with
one configuration each get a share of ceil(targets / N), a sidecar wanting only its own target
gets 1, and both kinds can share one database. The shares add up, over any set of targets, to
at least its size, so an assignment giving every wanted target a holder within the shares
exists; each claim computes it from the same stored facts, keeping current holders where the
shares allow, and does its own part of it.
"""

from __future__ import annotations

import itertools
import math
import threading
import zlib
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from probe._store.base import Lease


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """A stored lease as a claim finds it."""

    holder: str
    token: int
    expired: bool
    """Its expiry has passed on the database's clock (a released lease is expired too)."""
    released: bool


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """What one claim does to the leases: every target is in at most one of the three."""

    renew: frozenset[str]
    give_back: frozenset[str]
    take: tuple[str, ...]


def fair_share(wanted: Collection[str], wanters: Mapping[str, int]) -> int:
    """The number of leases an instance wanting ``wanted`` may hold; ``wanters`` counts the
    live instances (this one included) that want each target."""
    return math.ceil(sum(Fraction(1, wanters[target]) for target in wanted))


def assign(wants: Mapping[str, Collection[str]], holders: Mapping[str, str]) -> dict[str, str]:
    """A holder for every target wanted by the live instances ``wants`` (instance -> targets),
    none over its fair share, keeping the current ``holders`` (target -> instance) where the
    shares allow.

    Targets are placed least wanted first, each on the least loaded instance wanting it, or by
    moving placed targets along a chain of instances to one with room (an augmenting path).
    """
    wanters: dict[str, list[str]] = {}
    for instance in sorted(wants):
        for target in wants[instance]:
            wanters.setdefault(target, []).append(instance)
    counts = {target: len(instances) for target, instances in wanters.items()}
    shares = {instance: fair_share(wanted, counts) for instance, wanted in wants.items()}
    owned: dict[str, set[str]] = {instance: set() for instance in wants}
    owner: dict[str, str] = {}
    order = sorted(wanters, key=lambda target: (counts[target], target))
    for target in order:
        holder = holders.get(target)
        if holder in wanters[target] and len(owned[holder]) < shares[holder]:
            owned[holder].add(target)
            owner[target] = holder
    for target in order:
        if target not in owner:
            _place(target, wanters, shares, owned, owner)
    return owner


def _place(
    target: str,
    wanters: Mapping[str, list[str]],
    shares: Mapping[str, int],
    owned: dict[str, set[str]],
    owner: dict[str, str],
) -> None:
    """Give ``target`` a holder by breadth-first search for an instance with room."""

    def by_load(instances: Iterable[str], placed: str) -> list[str]:
        return sorted(instances, key=lambda i: (len(owned[i]), _preference(i, placed)))

    # instance -> (the target it would take, the instance that target moves from)
    came_from: dict[str, tuple[str, str | None]] = {}
    queue: deque[str] = deque()
    for instance in by_load(wanters[target], target):
        came_from[instance] = (target, None)
        queue.append(instance)
    while queue:
        instance = queue.popleft()
        if len(owned[instance]) < shares[instance]:
            while True:
                moved, previous = came_from[instance]
                owned[instance].add(moved)
                owner[moved] = instance
                if previous is None:
                    return
                owned[previous].discard(moved)
                instance = previous
        for placed in sorted(owned[instance]):
            for other in by_load(wanters[placed], placed):
                if other not in came_from:
                    came_from[other] = (placed, instance)
                    queue.append(other)


def plan_claim(
    instance: str, wants: Mapping[str, Collection[str]], rows: Mapping[str, LeaseRow]
) -> ClaimPlan:
    """The claim of ``instance``, among the live instances ``wants`` (itself included):
    ``rows`` holds the stored leases of every wanted target and every lease it holds.

    It renews the leases the assignment leaves it, takes those it gives it that are free, and
    gives back the rest; a lease it is given but another still holds is taken once that one
    gives it back (at its next claim) or lets it expire.
    """
    held = {target for target, row in rows.items() if row.holder == instance and not row.released}
    holders = {
        target: row.holder
        for target, row in rows.items()
        if not row.released and (not row.expired or row.holder == instance)
    }
    mine = {target for target, holder in assign(wants, holders).items() if holder == instance}
    return ClaimPlan(
        renew=frozenset(mine & held),
        give_back=frozenset(held - mine),
        take=tuple(
            sorted(target for target in mine - held if target not in rows or rows[target].expired)
        ),
    )


def _preference(instance: str, target: str) -> int:
    """An order of its own per instance, so instances starting together spread out."""
    return zlib.crc32(f"{instance}\0{target}".encode())


class LocalLeases:
    """The leases of a store with a single owner (the SQLite file's): every claim is granted.

    Tokens still fence: a write under a lease that was released since is refused.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, int] = {}
        self._next_token = itertools.count(1)
        self._lock = threading.Lock()

    def claim(self, targets: Collection[str], ttl: float) -> tuple[Lease, ...]:
        with self._lock:
            wanted = set(targets)
            for target in set(self._tokens) - wanted:
                del self._tokens[target]
            leases = []
            for target in sorted(wanted):
                renewed = target in self._tokens
                if not renewed:
                    self._tokens[target] = next(self._next_token)
                leases.append(
                    Lease(target, self._tokens[target], ttl, renewed=renewed, taken_over=False)
                )
            return tuple(leases)

    def release(self, targets: Collection[str] | None) -> None:
        with self._lock:
            for target in list(self._tokens) if targets is None else targets:
                self._tokens.pop(target, None)

    def stale(self, fences: Mapping[str, int], targets: Iterable[str]) -> frozenset[str]:
        """Those of ``targets`` whose fence is not the current lease's token."""
        with self._lock:
            return frozenset(
                target
                for target in targets
                if target in fences and self._tokens.get(target) != fences[target]
            )
