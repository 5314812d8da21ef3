"""What the daemon needs of a store: load Jobs, write a batch atomically, hold leases, close."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredJob:
    """One Job as the store keeps it; ``document`` is opaque JSON text."""

    job_id: str  # dashed UUID, primary key
    namespace: str
    state: str  # the Job's JobState value, for queries and debugging
    resource_version: int  # grows with every change of the Job
    document: str  # the Job plus its restart-accounting state
    target: str  # the Flink cluster the Job runs on: the lease it is written under
    observed: int  # the restart count's lower bound: a stored row never goes below it
    # The store-wide sequence number of the commit that wrote it (0: unwritten); not content.
    seq: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as the store keeps it; ``document`` is the Event resource as JSON text."""

    event_id: str  # primary key: the same change always gives the same id
    namespace: str
    job_id: str | None  # None for a target's event
    deployment_name: str | None
    reason: str
    created_at: float  # seconds since the Unix epoch
    target: str  # the lease it is written under
    document: str
    # The store-wide sequence number of the commit that wrote it (0: unwritten); not content.
    seq: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events :meth:`Store.events` returns: every condition given must hold."""

    namespace: str
    job_id: str | None = None
    deployment_name: str | None = None
    reason: str | None = None
    since: float | None = None
    """Only events created at or after this time (seconds since the Unix epoch)."""
    before: int | None = None
    """Only events of a sequence number below this (the continue token of a page)."""
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Changes:
    """What commits after a sequence number wrote, in sequence order."""

    jobs: tuple[StoredJob, ...]
    events: tuple[StoredEvent, ...]
    sequence: int
    """The sequence number these changes are complete up to: resume after it."""


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to probe ``target`` and write its Jobs, as granted by one :meth:`Store.claim`.

    The holder judges expiry by its own monotonic clock: the lease is valid until the
    monotonic time at which the claim was *sent* plus ``ttl``. The database's expiry is
    counted from a later instant (when it ran the claim), so the holder stops first.
    """

    target: str
    token: int
    """The fencing token: the same while one holder renews it, larger for every new holder."""
    ttl: float
    """Seconds granted, counted from the moment the claim was sent."""
    renewed: bool
    """True: this instance already held it under ``token``; False: newly acquired."""
    taken_over: bool
    """Acquired from another instance (its lease expired, or it released it)."""


class StoreError(Exception):
    """A failure of the store; ``str()`` is one line meant for the user."""


class FencedOut(StoreError):
    """A write carried a lease token that is no longer current; nothing of the batch was stored.

    Another instance holds these targets now: the writer drops them and writes the rest again.
    """

    def __init__(self, location: str, targets: Iterable[str]) -> None:
        self.targets = frozenset(targets)
        super().__init__(
            f"{location}: the lease of {', '.join(sorted(self.targets))} is held by another"
            " instance now; nothing of the batch was written"
        )


class Store(Protocol):
    """The operations the book, the scheduler and the daemon use; a backend implements them all.

    Every operation blocks: the daemon calls them from worker threads.
    """

    def load(self, targets: Collection[str] | None = None) -> list[StoredJob]:
        """The stored Jobs of ``targets`` (None: every stored Job), committed data only."""
        ...

    def write_batch(
        self,
        jobs: Sequence[StoredJob],
        fences: Mapping[str, int] | None = None,
        events: Sequence[StoredEvent] = (),
    ) -> int:
        """Upsert ``jobs`` and add ``events`` in one transaction: all are durable, or none is.

        Returns the store-wide sequence number after the commit: every row written carries a
        number of its own, above every number committed before, and at most this one. An
        event already stored (the same id) is kept as it was.

        ``fences`` maps a target to the token of the lease under which its Jobs were probed;
        if one of them is no longer current (the lease was released, or passed to another
        holder), FencedOut is raised and nothing is written. A
        Job whose target has no fence is written unfenced (Jobs declared at start-up). Either
        way a stored row is replaced only by one with a resource_version and an ``observed``
        at least as high: a stale or lowering write leaves the stored row as it was.
        """
        ...

    def sequence(self) -> int:
        """The store-wide sequence number of the last commit (0: nothing written yet)."""
        ...

    def changes(self, after: int, limit: int) -> Changes:
        """What commits numbered above ``after`` wrote: the Jobs (each at its newest) and the
        events, at most ``limit`` rows of each, in sequence order."""
        ...

    def events(self, query: EventQuery) -> list[StoredEvent]:
        """The events ``query`` selects, newest first."""
        ...

    def trim_events(self, older_than: float, max_per_job: int, job_ids: Collection[str]) -> int:
        """Delete the events created before ``older_than``, and all but the newest
        ``max_per_job`` of each of ``job_ids``; returns how many were deleted."""
        ...

    def claim(self, targets: Collection[str], ttl: float) -> tuple[Lease, ...]:
        """Renew this instance's leases of ``targets`` and take free ones up to its fair share.

        Also keeps this instance among the live ones for ``ttl`` seconds. Renewal is never
        refused, but held leases are given back where the balance between the live instances
        needs it (another instance joined; see leases.assign), as are leases on targets no
        longer in ``targets``. Returns the leases held afterwards, by target.
        """
        ...

    def release(self, targets: Collection[str] | None = None) -> None:
        """Give up this instance's leases of ``targets`` at once, so a successor takes them
        without waiting for expiry; None (SIGTERM): every lease, and leave the live instances."""
        ...

    def close(self) -> None:
        """Release the store's resources; the store cannot be used afterwards."""
        ...


def default_instance() -> str:
    """This daemon's name in leases when none is configured: host name and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"
