"""Restart accounting: a monotonic lower bound on a Flink job's restarts ("confirm before credit").

Pure logic, no I/O; the only implementation of the rule (docs/design.md, "The restart rule").
Flink's ``numRestarts`` counts one JobManager process, and both signs of a new process (a larger
``start-time``, the *epoch*, and a counter back at 0) arrive late and out of step. So a raw count
is credited to an epoch only once that epoch was current for every moment its snapshot could
come from, or once a newer epoch shows up whose start-time, less the clock skew bound, is after
the read.

Times are seconds since the Unix epoch (floats); epochs are Flink's ``start-time`` in ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Self


@dataclass(frozen=True, slots=True)
class PendingRaw:
    """A raw ``numRestarts`` read at ``seen_at`` whose snapshot is at most ``max_age`` old."""

    seen_at: float
    value: int
    max_age: float


@dataclass(frozen=True, slots=True)
class RestartLedger:
    """Everything needed to keep ``observed`` a lower bound; stored with the Job."""

    epoch: int | None = None
    epoch_first_seen: float | None = None
    epoch_current_until: float | None = None
    """The latest time the current epoch is known to have been current: the last sighting's
    time minus the age its answer may have had."""
    credit: int = 0
    sealed: int = 0
    process_restarts: int = 0
    pending: tuple[PendingRaw, ...] = ()
    observed: int = 0
    terminal_seen_at: float | None = None
    settled: bool = False

    @property
    def seen(self) -> bool:
        """Whether any epoch of the job has been seen (the job is known to exist)."""
        return self.epoch is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "epochFirstSeen": self.epoch_first_seen,
            "epochCurrentUntil": self.epoch_current_until,
            "credit": self.credit,
            "sealed": self.sealed,
            "processRestarts": self.process_restarts,
            "pending": [[p.seen_at, p.value, _encode_age(p.max_age)] for p in self.pending],
            "observed": self.observed,
            "terminalSeenAt": self.terminal_seen_at,
            "settled": self.settled,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(
            epoch=data["epoch"],
            epoch_first_seen=data["epochFirstSeen"],
            epoch_current_until=data["epochCurrentUntil"],
            credit=data["credit"],
            sealed=data["sealed"],
            process_restarts=data["processRestarts"],
            pending=tuple(
                PendingRaw(float(t), int(v), _decode_age(a)) for t, v, a in data["pending"]
            ),
            observed=data["observed"],
            terminal_seen_at=data["terminalSeenAt"],
            settled=data["settled"],
        )


def _encode_age(age: float) -> float | None:
    # JSON has no infinity; an unknown age (first read after start-up) is stored as null.
    return None if math.isinf(age) else age


def _decode_age(age: float | None) -> float:
    return math.inf if age is None else float(age)


@dataclass(frozen=True, slots=True)
class Sighting:
    """What one probe learnt that matters to the count. ``None`` means "not learnt"."""

    epoch: int | None = None
    terminal: bool = False
    raw: int | None = None
    raw_max_age: float = math.inf
    epoch_max_age: float | None = None
    """How old the epoch's answer may be; None means the target's ``overview_max_age``."""


DEFAULT_MAX_CLOCK_SKEW = 1.0
"""Seconds: NTP-synchronised hosts are well within it."""


@dataclass(frozen=True, slots=True)
class Lags:
    """A target's bounds on how old its answers can be, and on its JobManagers' clocks (seconds)."""

    overview_max_age: float
    metrics_max_age: float
    max_clock_skew: float | None = DEFAULT_MAX_CLOCK_SKEW
    """K: how far a JobManager's clock may be from the daemon's. None turns the successor rule
    of step 1 off, for clusters whose clocks cannot be trusted."""

    @property
    def give_up_after(self) -> float:
        """How long after a terminal sighting the count settles even without a final raw
        (Flink may forget a finished job's metrics)."""
        return 3 * self.metrics_max_age


def widen(ledger: RestartLedger, skew: float) -> RestartLedger:
    """The ledger for a daemon whose clock may be up to ``skew`` seconds off the clock that
    stamped its times (a takeover of the Job by another daemon sharing the store).

    Each time moves by ``skew`` in the direction that makes every test of the rule stricter:
    the epoch first seen later and known current until earlier, the terminal sighting later,
    and each pending raw read later with a snapshot up to ``skew`` older. A decision the rule
    then takes holds on the new clock whatever the true offset (docs/design.md, "Takeover").
    """
    if ledger.settled or skew == 0:
        return ledger
    return RestartLedger(
        ledger.epoch,
        None if ledger.epoch_first_seen is None else ledger.epoch_first_seen + skew,
        None if ledger.epoch_current_until is None else ledger.epoch_current_until - skew,
        ledger.credit,
        ledger.sealed,
        ledger.process_restarts,
        tuple(PendingRaw(p.seen_at + skew, p.value, p.max_age + 2 * skew) for p in ledger.pending),
        ledger.observed,
        None if ledger.terminal_seen_at is None else ledger.terminal_seen_at + skew,
        ledger.settled,
    )


# Raws wait in `pending` only while their epoch is not seen again; if the overview stays away
# for long they would pile up. Dropping the oldest loses at most a credit: still a lower bound.
MAX_PENDING = 64


def observe(ledger: RestartLedger, now: float, sighting: Sighting, lags: Lags) -> RestartLedger:
    """Fold one probe's sighting into the ledger (steps 1 to 5 of the rule)."""
    if ledger.settled:
        return ledger
    if (
        sighting.epoch is not None
        and sighting.epoch == ledger.epoch
        and sighting.raw is None
        and not sighting.terminal
        and not ledger.pending
        and ledger.terminal_seen_at is None
    ):
        # Nearly every probe of a running job: the same epoch, nothing to credit or settle.
        # The steps below would only move `epoch_current_until`, so skip their draft (a test
        # checks both ways agree).
        return _seen_current(ledger, now - _epoch_age(sighting, lags))
    return _steps(ledger, now, sighting, lags)


def _seen_current(ledger: RestartLedger, current_at: float) -> RestartLedger:
    """The ledger after a sighting of its current epoch with no raw and no end."""
    until = ledger.epoch_current_until
    return RestartLedger(
        ledger.epoch,
        ledger.epoch_first_seen,
        current_at if until is None or current_at > until else until,
        ledger.credit,
        ledger.sealed,
        ledger.process_restarts,
        ledger.pending,
        max(ledger.observed, ledger.sealed + ledger.credit + ledger.process_restarts),
        ledger.terminal_seen_at,
        ledger.settled,
    )


def _epoch_age(sighting: Sighting, lags: Lags) -> float:
    return lags.overview_max_age if sighting.epoch_max_age is None else sighting.epoch_max_age


def _steps(ledger: RestartLedger, now: float, sighting: Sighting, lags: Lags) -> RestartLedger:
    """Steps 1 to 5 of the rule, for any sighting of an unsettled ledger."""
    led = _Draft(
        ledger.epoch,
        ledger.epoch_first_seen,
        ledger.epoch_current_until,
        ledger.credit,
        ledger.sealed,
        ledger.process_restarts,
        ledger.pending,
        ledger.observed,
        ledger.terminal_seen_at,
        ledger.settled,
    )
    _see_epoch(led, now, sighting, now - _epoch_age(sighting, lags), lags.max_clock_skew)
    if sighting.raw is not None:
        raw = PendingRaw(now, sighting.raw, sighting.raw_max_age)
        led.pending = (*led.pending, raw)[-MAX_PENDING:]
    credited = _confirm(led)
    _settle(led, now, lags, credited)
    led.observed = max(led.observed, led.sealed + led.credit + led.process_restarts)
    return RestartLedger(
        led.epoch,
        led.epoch_first_seen,
        led.epoch_current_until,
        led.credit,
        led.sealed,
        led.process_restarts,
        led.pending,
        led.observed,
        led.terminal_seen_at,
        led.settled,
    )


@dataclass(slots=True)
class _Draft:
    """A RestartLedger being worked on: one probe's steps mutate it, then it is frozen again
    (rather than a frozen copy per step). Its fields are the ledger's, in order (a test
    checks), copied by name in `_steps` rather than generically."""

    epoch: int | None
    epoch_first_seen: float | None
    epoch_current_until: float | None
    credit: int
    sealed: int
    process_restarts: int
    pending: tuple[PendingRaw, ...]
    observed: int
    terminal_seen_at: float | None
    settled: bool


def _see_epoch(
    led: _Draft, now: float, sighting: Sighting, current_at: float, max_clock_skew: float | None
) -> None:
    """Steps 1 and 5: a newer epoch seals the current one; a terminal status is remembered.

    ``current_at`` is the latest time the sighting proves the epoch current (its snapshot
    can be that old)."""
    epoch = sighting.epoch
    if epoch is None or (led.epoch is not None and epoch < led.epoch):
        return  # nothing learnt, or a stale answer from before the current epoch
    if led.epoch is None:
        led.epoch, led.epoch_first_seen, led.epoch_current_until = epoch, now, current_at
    elif epoch > led.epoch:
        if led.terminal_seen_at is not None:
            # A globally terminal job is never taken over again; a larger start-time for
            # it can only be a different submission under the same id, which we ignore.
            return
        if max_clock_skew is not None:
            _credit_before_successor(led, epoch / 1000 - max_clock_skew)
        _seal(led)
        led.epoch, led.epoch_first_seen, led.epoch_current_until = epoch, now, current_at
        led.pending = ()
    elif led.epoch_current_until is None or current_at > led.epoch_current_until:
        led.epoch_current_until = current_at
    if sighting.terminal and led.terminal_seen_at is None:
        led.terminal_seen_at = now


def _seal(led: _Draft) -> None:
    """Close the current JobManager process: its credit is final and one restart is counted."""
    led.sealed += led.credit
    led.credit = 0
    led.process_restarts += 1


def _credit(led: _Draft, value: int) -> None:
    """Credit a raw known to come from the current epoch (or from an unseen one after it)."""
    if value < led.credit:
        # Lower: a process restart that kept start-time (or an unseen epoch) came in between.
        _seal(led)
    led.credit = max(led.credit, value)


def _credit_before_successor(led: _Draft, successor_began_by: float) -> None:
    """Step 1's successor rule: credit, in read order, every pending raw read before
    ``successor_began_by`` (the newer epoch's start-time less the clock skew bound).

    Its snapshot predates the successor, and it was read M or more after the current epoch was
    first seen (`_confirm` drops the others at once): it comes from the current epoch or from
    an epoch between the two that was never seen. Credited with max, such an epoch adds at most
    its own count, and its process restart is not counted: the sum stays a lower bound."""
    for raw in led.pending:
        if raw.seen_at < successor_began_by:
            _credit(led, raw.value)


def _confirm(led: _Draft) -> list[PendingRaw]:
    """Credit every pending raw now known to belong to the current epoch; return those credited."""
    if led.epoch_first_seen is None or led.epoch_current_until is None or not led.pending:
        return []
    first_seen, current_until = led.epoch_first_seen, led.epoch_current_until
    terminal = led.terminal_seen_at is not None
    kept: list[PendingRaw] = []
    credited: list[PendingRaw] = []
    for raw in led.pending:
        if raw.seen_at - raw.max_age < first_seen:
            continue  # its snapshot may predate this epoch: possibly the old process's count
        if not terminal and current_until < raw.seen_at:
            kept.append(raw)  # not yet known that no newer epoch had begun by its snapshot
            continue
        _credit(led, raw.value)
        credited.append(raw)
    led.pending = tuple(kept)
    return credited


def _settle(led: _Draft, now: float, lags: Lags, credited: list[PendingRaw]) -> None:
    """Step 5: a terminal epoch's count is final once a raw taken after its end is credited."""
    if led.terminal_seen_at is None:
        return
    final_read = any(r.seen_at - r.max_age >= led.terminal_seen_at for r in credited)
    if final_read or now >= led.terminal_seen_at + lags.give_up_after:
        led.settled, led.pending = True, ()
