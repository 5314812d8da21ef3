"""Which Jobs a round asks for ``numRestarts``: only those whose count can have changed.

Pure logic, no I/O. Flink's ``numRestarts`` moves only when tasks of the job restart, and every
restart leaves a trace in ``/jobs/overview``, which a round reads anyway: the job's
``last-modification`` is the newest state-change time of any of its tasks, and a restart gives
the restarted tasks new attempts with newer state times (a JobManager change moves
``start-time``; an end moves ``state``). So per Job the plan keeps the overview's *signature*
(state, start-time, last-modification) and asks the metric while the signature is new:
until a read whose snapshot is provably not older than the sighting of that signature
(``at - max_age``, the same bound the restart rule credits with) has answered. Such a read
shows every restart the signature stands for; until the signature moves again there is
nothing new to read. Everything else keeps being read every round: a Job found only through
``/jobs/:jid`` (no last-modification), and a Job whose previous read gave no value.

As a safety net each Job is read at least once per ``refresh`` anyway, at a phase of its own
(so Jobs loaded together do not all come due in one round). ``refresh = 0`` reads every Job
every round, as a plain exporter would.
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
