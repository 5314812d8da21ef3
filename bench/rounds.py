"""Probe rounds and commits from the daemon's debug log, and scheduling lag worked out of them.

At ``logging.level: debug`` the daemon writes one ``probe round`` line per target and round
(jobs, requests, errors, seconds; its timestamp is when the round ended) and one ``committed``
line per store batch. A round began at ``timestamp - seconds``.

The lag of a round is how late it began against its slot on the target's grid
``start + offset(target) + k * interval``. When the line carries ``lag`` it is used as is;
otherwise it is worked out: ``(began - offset) mod interval`` is ``start + lag`` (mod
interval) for every round, so with ``start`` estimated as the least-late round of a quiet
window the lag of every other round follows. The estimate is low by that round's own lag
(small: an asyncio timer on an idle loop fires nearly on time) and by the spread of the
targets' loop start times (same event-loop tick). The histogram
``flink_probe_scheduler_lag_seconds`` (its exact mean from ``_sum``/``_count``) is reported
beside it as a cross-check.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Round:
    target: str
    began: float
    seconds: float
    jobs: int
    requests: int
    errors: int
    up: bool
    lag: float | None
    """From the log line when the daemon writes it; else ``None`` (see ``estimate_lags``)."""


@dataclass(frozen=True, slots=True)
class Commit:
    at: float
    jobs: int
    seconds: float


def target_offset(name: str, interval: float) -> float:
    """The target's offset on the grid: must match ``probe/_runtime/scheduler.py:_offset``."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return interval * int.from_bytes(digest) / 2**64


def epoch(timestamp: str) -> float:
    """Unix time of a log line's ISO 8601 ``timestamp``."""
    return datetime.fromisoformat(timestamp).timestamp()


class LogReader:
    """Reads the daemon's JSON log file incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.rounds: list[Round] = []
        self.commits: list[Commit] = []
        self.events: list[dict[str, object]] = []
        """Every line that is neither a round nor a commit (start-up, discoveries, errors)."""

    def read(self) -> None:
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            self.events.append({"event": "unparsed", "text": line.decode(errors="replace")})
            return
        if not isinstance(entry, dict):
            return
        event = entry.get("event")
        if event == "probe round" and "timestamp" in entry:
            seconds = float(entry.get("seconds", 0.0))
            lag = entry.get("lag")
            self.rounds.append(
                Round(
                    target=str(entry.get("target")),
                    began=epoch(str(entry["timestamp"])) - seconds,
                    seconds=seconds,
                    jobs=int(entry.get("jobs", 0)),
                    requests=int(entry.get("requests", 0)),
                    errors=int(entry.get("errors", 0)),
                    up=bool(entry.get("up", True)),
                    lag=float(lag) if lag is not None else None,
                )
            )
        elif event == "committed" and "timestamp" in entry:
            self.commits.append(
                Commit(
                    at=epoch(str(entry["timestamp"])),
                    jobs=int(entry.get("jobs", 0)),
                    seconds=float(entry.get("seconds", 0.0)),
                )
            )
        else:
            self.events.append(entry)

    def first(self, event: str) -> float | None:
        for entry in self.events:
            if entry.get("event") == event and "timestamp" in entry:
                return epoch(str(entry["timestamp"]))
        return None


class LagModel:
    """Where every target's grid lies, from a quiet window's rounds (see the module text).

    ``per_target``: each target's grid has a start of its own, its least-late round's (the
    loops of a replica start whenever it takes a lease, not all at once).
    """

    def __init__(self, interval: float, reference: Sequence[Round], per_target: bool = False):
        self.interval = interval
        self._offsets: dict[str, float] = {}
        self.base = self._least_late([self._phase(r) for r in reference])
        phases: dict[str, list[float]] = {}
        if per_target:
            for r in reference:
                phases.setdefault(r.target, []).append(self._phase(r))
        self._bases = {target: self._least_late(values) for target, values in phases.items()}

    def _least_late(self, phases: Sequence[float]) -> float:
        """The phase of zero lag among rounds whose phases cluster around it."""
        if not phases:
            return 0.0
        interval = self.interval
        # Centre the phases on their circular mean, then the least-late one is the zero.
        angle = math.atan2(
            sum(math.sin(2 * math.pi * p / interval) for p in phases),
            sum(math.cos(2 * math.pi * p / interval) for p in phases),
        )
        centre = (angle / (2 * math.pi) * interval) % interval
        deviations = [self._wrap(p - centre, interval / 2) for p in phases]
        return (centre + min(deviations)) % interval

    def _phase(self, round_: Round) -> float:
        offset = self._offsets.get(round_.target)
        if offset is None:
            offset = self._offsets[round_.target] = target_offset(round_.target, self.interval)
        return (round_.began - offset) % self.interval

    @staticmethod
    def _wrap(value: float, half: float) -> float:
        return (value + half) % (2 * half) - half

    def lag(self, round_: Round) -> float:
        if round_.lag is not None:
            return round_.lag
        # A little below zero stays negative (clock noise) instead of wrapping to ~interval.
        margin = 0.05 * self.interval
        base = self._bases.get(round_.target, self.base)
        return (self._phase(round_) - base + margin) % self.interval - margin

    def due(self, round_: Round) -> float:
        """The round's slot on its target's grid (``offset + base + k * interval``): every
        round of a target lands exactly on the grid, so a window of K intervals holds K."""
        return round_.began - self.lag(round_)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def in_window(rounds: Iterable[Round], model: LagModel, start: float, end: float) -> list[Round]:
    """Rounds due in [start, end)."""
    return [r for r in rounds if start <= model.due(r) < end]
