"""Why a job restarted: the root causes Flink's exception history reports, taken once each.

Pure logic, no I/O. Flink keeps a bounded history per JobManager and empties it at a failover;
every read returns the newest entries again, so a mark of what was taken already keeps each
entry from being reported twice, across reads and across the daemon's restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

MAX_CAUSES: Final = 10
"""Root causes kept per JOB_RESTARTED event (and pending on a Job): the newest."""


@dataclass(frozen=True, slots=True)
class RootCause:
    """One entry of Flink's exception history, as a restart's cause."""

    exception: str
    """The exception's class name."""
    message: str
    """The first line of its message."""
    timestamp: int
    """When Flink recorded it, ms since the Unix epoch."""
    task_name: str | None = None

    @property
    def key(self) -> tuple[int, str]:
        """What identifies an entry across reads of the history."""
        return (self.timestamp, self.exception)

    def to_dict(self) -> dict[str, Any]:
        return {
            "exceptionName": self.exception,
            "message": self.message,
            "timestamp": self.timestamp,
            "taskName": self.task_name,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RootCause:
        return cls(
            exception=str(data["exceptionName"]),
            message=str(data["message"]),
            timestamp=int(data["timestamp"]),
            task_name=data.get("taskName"),
        )


@dataclass(frozen=True, slots=True)
class CausesSeen:
    """Which exception-history entries were taken already: every entry up to ``until`` (ms),
    those named ``names`` at ``until`` itself."""

    until: int = 0
    names: frozenset[str] = frozenset()

    def new(self, causes: Iterable[RootCause]) -> tuple[RootCause, ...]:
        """The causes not taken yet, oldest first, without duplicates."""
        fresh = {
            cause.key: cause
            for cause in causes
            if cause.timestamp > self.until
            or (cause.timestamp == self.until and cause.exception not in self.names)
        }
        return tuple(fresh[key] for key in sorted(fresh))

    def taking(self, causes: Sequence[RootCause]) -> CausesSeen:
        """This mark moved past ``causes``."""
        if not causes:
            return self
        newest = max(cause.timestamp for cause in causes)
        if newest < self.until:
            return self
        names = {cause.exception for cause in causes if cause.timestamp == newest}
        if newest == self.until:
            names |= self.names
        return CausesSeen(newest, frozenset(names))

    def to_dict(self) -> dict[str, Any]:
        return {"until": self.until, "names": sorted(self.names)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CausesSeen:
        return cls(int(data["until"]), frozenset(str(name) for name in data["names"]))


NOTHING_SEEN: Final = CausesSeen()
