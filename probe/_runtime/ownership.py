"""Which targets this daemon probes: the leases it holds in the store.

A target is probed by at most one daemon at a time, the holder of its lease (``Store.claim``).
The daemon claims every interval: it renews what it holds and takes free leases up to its fair
share. It judges a lease by its own monotonic clock, from the moment the claim was *sent*
(the store counts from later), and gives the target up a safety margin before that; a lease it
cannot renew in time (the store unreachable, or the lease given to another) is lost: the target
stops. A SQLite store has one owner, which holds every target for good.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

import anyio

from probe._cogs.logs import get_logger
from probe._store import Lease, Store, StoreError

log = get_logger("flink_probe.leases")


@dataclass(frozen=True, slots=True)
class LeaseChanges:
    """What one claim, or the passing of a lease's deadline, changed."""

    acquired: tuple[Lease, ...] = ()
    """Newly held: load their Jobs, then start their loops."""
    lost: frozenset[str] = frozenset()
    """Held before and not any more (given back, taken, expired, fenced out): stop them."""

    def __bool__(self) -> bool:
        return bool(self.acquired or self.lost)


@dataclass(frozen=True, slots=True)
class _Held:
    lease: Lease
    deadline: float
    """Monotonic time until which the target may be probed and written."""


class Ownership:
    """This daemon's leases, as its own clock judges them."""

    def __init__(
        self,
        store: Store,
        ttl: float,
        margin: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ttl``: seconds a claim asks for (infinite: a single owner's leases never end);
        ``margin``: how long before its expiry a lease is given up (clocks may drift)."""
        self._store = store
        self.ttl = ttl
        self._margin = margin
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._fenced: set[str] = set()
        self._wakeup = anyio.Event()
        self._claim_requested = False
        self.settled = False
        """A claim has answered since the start."""
        self.reachable = True
        """The last claim answered."""
        self.error: str | None = None
        """Why the last claim failed (one line), while claims fail."""
        self.takeovers = 0
        """Leases acquired from another instance (its lease expired, or it released it)."""

    # Readers (the book, metrics, /readyz).

    @property
    def held(self) -> frozenset[str]:
        """The targets whose lease is valid now."""
        now = self._clock()
        return frozenset(name for name, held in self._held.items() if held.deadline > now)

    def holds(self, target: str) -> bool:
        held = self._held.get(target)
        return held is not None and held.deadline > self._clock()

    def fences(self) -> Mapping[str, int]:
        """The token of every valid lease: the book writes a target's Jobs under it."""
        now = self._clock()
        return {name: held.lease.token for name, held in self._held.items() if held.deadline > now}

    def fenced_out(self, targets: Collection[str]) -> None:
        """The store refused a write under these leases: another instance holds them now."""
        for target in targets:
            if self._held.pop(target, None) is not None:
                self._fenced.add(target)
        self._wakeup.set()

    def forget(self, targets: Collection[str]) -> None:
        """Stop counting on these leases (their Jobs could not be loaded); the next claim
        offers them again."""
        for target in targets:
            self._held.pop(target, None)

    def request_claim(self) -> None:
        """Claim now rather than at the next period (the wanted targets changed)."""
        self._claim_requested = True
        self._wakeup.set()

    # Claims.

    async def claim(self, wanted: Collection[str]) -> LeaseChanges:
        """Renew and take leases of ``wanted``; what changed. A failed claim changes nothing
        but the leases whose deadline passed: they stay until then."""
        sent = self._clock()
        expired = self._expire(sent)
        # Wait no longer than the first held lease lasts: a hanging store must not keep a
        # target probed past its deadline.
        limit = self._first_deadline() - sent
        try:
            with anyio.fail_after(None if math.isinf(limit) else limit):
                leases = await anyio.to_thread.run_sync(
                    self._store.claim, sorted(wanted), self.ttl, abandon_on_cancel=True
                )
        except (StoreError, TimeoutError) as exc:
            error = str(exc) if isinstance(exc, StoreError) else "the store did not answer in time"
            if self.reachable:
                log.error(
                    "lease claim failed; held targets are probed until their leases end",
                    error=error,
                    held=sorted(self._held),
                )
            self.reachable, self.error = False, error
            changes = LeaseChanges(lost=expired | self._expire(self._clock()) | self._take_fenced())
            self._log(changes, wanted)
            return changes
        if not self.reachable:
            log.info("lease claims answer again")
        self.settled, self.reachable, self.error = True, True, None
        granted = {lease.target: lease for lease in leases}
        lost = {
            name
            for name, held in self._held.items()
            if name not in granted or granted[name].token != held.lease.token
        }
        for name in lost:
            del self._held[name]
        acquired = tuple(lease for lease in leases if lease.target not in self._held)
        self._held = {
            lease.target: _Held(lease, sent + lease.ttl - self._margin) for lease in leases
        }
        self.takeovers += sum(1 for lease in acquired if lease.taken_over)
        changes = LeaseChanges(acquired, frozenset(expired | lost) | self._take_fenced())
        self._log(changes, wanted)
        return changes

    def _log(self, changes: LeaseChanges, wanted: Collection[str]) -> None:
        if math.isinf(self.ttl):
            return  # a single owner's leases are a formality
        for lease in changes.acquired:
            log.info(
                "lease acquired",
                target=lease.target,
                token=lease.token,
                taken_over=lease.taken_over,
            )
        for target in sorted(changes.lost):
            if target in wanted:
                log.warning("lease lost; target stopped", target=target)
            else:
                log.info("lease given back", target=target)

    def _expire(self, now: float) -> frozenset[str]:
        expired = frozenset(name for name, held in self._held.items() if held.deadline <= now)
        for name in expired:
            del self._held[name]
        return expired

    def _take_fenced(self) -> frozenset[str]:
        fenced, self._fenced = frozenset(self._fenced), set()
        return fenced

    async def release(self) -> None:
        """Give up every lease at once (SIGTERM), so a successor takes over within one claim."""
        held, self._held = sorted(self._held), {}
        try:
            await anyio.to_thread.run_sync(self._store.release)
        except StoreError as exc:
            log.error("releasing the leases failed; they end when they expire", error=str(exc))
            return
        if held and not math.isinf(self.ttl):
            log.info("leases released", targets=held)

    async def run(
        self,
        wanted: Callable[[], Collection[str]],
        apply: Callable[[LeaseChanges], Awaitable[None]],
        period: Callable[[], float],
    ) -> None:
        """Claim every ``period`` (or when asked), and hand every change to ``apply``; between
        claims, a lease whose deadline passes is lost at that moment."""
        next_claim = self._clock() + period()
        while True:
            wake = min(next_claim, self._first_deadline())
            with anyio.move_on_after(max(0.0, wake - self._clock())):
                await self._wakeup.wait()
            self._wakeup = anyio.Event()
            now = self._clock()
            if self._claim_requested or now >= next_claim:
                self._claim_requested = False
                next_claim = now + period()
                changes = await self.claim(wanted())
            else:
                changes = LeaseChanges(lost=self._expire(now) | self._take_fenced())
                self._log(changes, wanted())
            if changes:
                await apply(changes)

    def _first_deadline(self) -> float:
        return min((held.deadline for held in self._held.values()), default=math.inf)
