"""Which Jobs a round asks for ``numRestarts``: only those whose count can have changed.

Pure logic, no I/O (docs/design.md, "The read plan"). Every restart moves the job's overview
entry, its *signature* (state, start-time, last-modification), which a round reads anyway; so a
Job is read while its signature is new, until a read whose snapshot is provably not older than
the signature's first sighting (``at - max_age``, the restart rule's bound) has answered. Jobs
without a last-modification, or whose previous read gave no value, are read every round; every
Job at least once per ``refresh`` (0: every round), at a phase of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from probe._core.model import FlinkJobStatus

Signature = tuple[FlinkJobStatus, int, int]
"""(state, start-time, last-modification) of a job as the overview shows it."""


@dataclass(slots=True)
class _Track:
    signature: Signature | None
    changed_at: float
    """When the signature was first seen (the observation's time)."""
    covered_from: float = -math.inf
    """The newest snapshot time an answered read is known to be at least as new as."""
    last_read_at: float = -math.inf
    """When ``numRestarts`` last answered with a value."""


class ReadPlan:
    """The numRestarts reads of one target's Jobs, keyed by Flink job id."""

    def __init__(self, refresh: float) -> None:
        self.refresh = refresh
        self._tracks: dict[str, _Track] = {}

    def wants(self, jid: str, signature: Signature | None, now: float) -> bool:
        """Whether this round should ask the job's ``numRestarts``."""
        track = self._track(jid, signature)
        if track is None or track.covered_from < track.changed_at:
            return True
        return self._refresh_due(jid, track.last_read_at, now)

    def saw(
        self,
        jid: str,
        signature: Signature | None,
        at: float,
        num_restarts: int | None,
        max_age: float,
    ) -> None:
        """Record a probe's observation at ``at``: its signature, and the read if it answered."""
        track = self._track(jid, signature)
        if track is None:
            track = self._tracks[jid] = _Track(signature, at)
        if num_restarts is not None:
            track.last_read_at = at
            track.covered_from = max(track.covered_from, at - max_age)

    def _track(self, jid: str, signature: Signature | None) -> _Track | None:
        """The job's track if it is of this signature (an unknown signature is always new)."""
        track = self._tracks.get(jid)
        if track is None or signature is None or track.signature != signature:
            return None
        return track

    def keep_only(self, jids: set[str]) -> None:
        """Forget the Jobs no longer probed (ended, settled, removed)."""
        for jid in self._tracks.keys() - jids:
            del self._tracks[jid]

    def _refresh_due(self, jid: str, last_read_at: float, now: float) -> bool:
        if self.refresh <= 0 or math.isinf(last_read_at):
            return True
        # A grid of period `refresh` with a per-job phase: due once the grid slot changed.
        phase = int(jid[:8], 16) / 2**32 * self.refresh
        return (now + phase) // self.refresh > (last_read_at + phase) // self.refresh
