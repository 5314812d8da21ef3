"""A simulated Flink job: its true restart history, and the lagging sources a probe reads.

The truth: a job runs in one JobManager process after another. Inside a process Flink's
``numRestarts`` counts task restarts from 0. A failover starts a new process with a new,
strictly larger ``start-time`` (the *epoch*, ms); a process restart can also keep the
start-time (an application-mode JobManager resubmitting a fixed job id). Either way the
process change is one true restart that no Flink counter shows. The job may end globally
terminal (FINISHED, FAILED, CANCELED), after which nothing changes. The true count at ``t`` is
the sum of the processes' counters plus the number of process changes, all up to ``t``.
Start-times are stamped by the JobManagers' clock, a fixed offset ahead of the daemon's: within
the bound K the daemon is configured with, or beyond it to show what that assumption buys.

The probe never sees the truth directly. The overview (status and start-time) answers with
the truth as of a snapshot time in ``[t - E, t]``, the metric store answers ``numRestarts`` of
the process current at its own snapshot time in ``[t - M, t]``; each source's snapshots never
go backwards, and either answer may be missing. Right after a failover the metric store can
thus still serve the old process's high count while the overview already shows the new epoch:
the lag that makes naive accounting over-count (docs/design.md, "The restart rule").

Generation is written once against ``Chooser``: ``RandomChooser`` (benchmarks, demos) and
``runs()`` (a hypothesis strategy that shrinks to small, readable histories) share it.
Every time is a multiple of ``TICK`` seconds on top of ``BASE``: exact in binary floating
point, so histories really hit the rule's boundaries (a raw seen exactly ``M`` after its epoch).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Protocol, TypeVar

from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st

from probe._core.fold import Observation, Presence
from probe._core.model import FlinkJobStatus
from probe._core.reads import ReadPlan, Signature
from probe._core.restarts import Lags, RestartLedger, Sighting, observe

TICK = 0.25
"""Seconds per tick; every simulated time is a whole number of ticks after BASE."""
BASE = 1_700_000_000.0
"""Unix time at which the simulated job was submitted."""

# How long the statuses around a (re)start last, for observations that feed the Job fold.
_INITIALIZING_FOR = 0.5
_RESTARTING_FOR = 1.0


# -- hypothesis budgets ------------------------------------------------------------------------
# Profiles are registered here, beside the strategies they budget, and picked by the
# HYPOTHESIS_PROFILE environment variable: "ci" (default) keeps the suite fast, "deep" searches
# long (HYPOTHESIS_PROFILE=deep .venv/bin/pytest tests/unit/core/test_restarts.py).
settings.register_profile(
    "ci",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("deep", parent=settings.get_profile("ci"))
PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE_NAME not in ("ci", "deep"):
    raise ValueError(f"HYPOTHESIS_PROFILE={PROFILE_NAME!r}: expected 'ci' or 'deep'")

_F = TypeVar("_F", bound=Callable[..., Any])


def budget(ci: int, deep: int) -> Callable[[_F], _F]:
    """Hypothesis settings of the active profile with ``ci`` or ``deep`` examples."""
    examples = deep if PROFILE_NAME == "deep" else ci
    chosen: Callable[[_F], _F] = settings(settings.get_profile(PROFILE_NAME), max_examples=examples)
    return chosen


# -- choosing ----------------------------------------------------------------------------------
class Chooser(Protocol):
    """The random choices a generator makes (small numbers and "no" are the simple cases)."""

    def integer(self, low: int, high: int) -> int: ...

    def chance(self, percent: int) -> bool: ...


class RandomChooser:
    """Choices from a seeded ``random.Random`` (benchmarks, demos)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def integer(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)

    def chance(self, percent: int) -> bool:
        return self._rng.randrange(100) < percent


class DataChooser:
    """Choices drawn by hypothesis, which shrinks them to low integers and to "no".

    Each choice reads one or two bytes of a binary drawn in chunks: a hypothesis draw costs
    about as much as a whole simulated probe, so one draw per choice would make the search
    many times slower. Byte 0 means the low end and "no", so shrinking still simplifies.
    """

    _CHUNK = 32

    def __init__(self, draw: Callable[[st.SearchStrategy[bytes]], bytes]) -> None:
        self._draw = draw
        self._buffer = b""
        self._next = 0

    def _byte(self) -> int:
        if self._next == len(self._buffer):
            self._buffer = self._draw(st.binary(min_size=self._CHUNK, max_size=self._CHUNK))
            self._next = 0
        self._next += 1
        return self._buffer[self._next - 1]

    def integer(self, low: int, high: int) -> int:
        span = high - low + 1
        if span == 1:
            return low
        if span <= 256:
            return low + self._byte() * span // 256
        return low + (self._byte() << 8 | self._byte()) * span // 65536

    def chance(self, percent: int) -> bool:
        return percent > 0 and self._byte() * 100 // 256 >= 100 - percent


def at_tick(ticks: int) -> float:
    return BASE + ticks * TICK


def tick_of(seconds: float) -> int:
    """The tick a simulated time falls on (inverse of ``at_tick``)."""
    return round((seconds - BASE) / TICK)


def epoch_ms(seconds: float) -> int:
    return round(seconds * 1000)


# -- the truth ---------------------------------------------------------------------------------
class ProcessStart(Enum):
    SUBMISSION = "submission"
    FAILOVER = "failover"
    """A new JobManager took the job over: new, larger start-time."""
    KEEP_START_TIME = "keep-start-time"
    """A new process whose job kept its start-time (counter back to 0, nothing else shows it)."""


@dataclass(frozen=True, slots=True)
class Process:
    """One JobManager process running the job, from ``began`` until the next one begins."""

    began: float
    start_time: int
    how: ProcessStart
    task_restarts: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class TrueHistory:
    """What really happened to one Flink job. Times are Unix seconds, ``start_time`` is ms."""

    processes: tuple[Process, ...]
    terminal_at: float | None = None
    terminal_status: FlinkJobStatus = FlinkJobStatus.FINISHED
    clock_offset: float = 0.0
    """How far the JobManagers' clock, which stamps start-times, is ahead of the daemon's (s)."""

    @property
    def submitted(self) -> float:
        return self.processes[0].began

    @property
    def process_restarts(self) -> int:
        return len(self.processes) - 1

    @property
    def last_change(self) -> float:
        """When the true count or the epoch last changed (before the job ended)."""
        last = self.processes[-1]
        return max((last.began, *last.task_restarts))

    def exists_at(self, t: float) -> bool:
        return t >= self.submitted

    def process_at(self, t: float) -> Process:
        current = self.processes[0]
        for process in self.processes[1:]:
            if process.began > t:
                break
            current = process
        return current

    def num_restarts_at(self, t: float) -> int:
        """Flink's ``numRestarts`` at ``t``: the current process's own count."""
        return sum(1 for r in self.process_at(t).task_restarts if r <= t)

    def epoch_at(self, t: float) -> int:
        return self.process_at(t).start_time

    def true_count(self, t: float) -> int:
        begun = [p for p in self.processes if p.began <= t]
        counted = sum(1 for p in begun for r in p.task_restarts if r <= t)
        return counted + len(begun) - 1

    @property
    def final_count(self) -> int:
        return self.true_count(math.inf)

    def status_at(self, t: float) -> FlinkJobStatus:
        if self.terminal_at is not None and t >= self.terminal_at:
            return self.terminal_status
        process = self.process_at(t)
        if t < process.began + _INITIALIZING_FOR:
            return FlinkJobStatus.INITIALIZING
        if any(r <= t < r + _RESTARTING_FOR for r in process.task_restarts):
            return FlinkJobStatus.RESTARTING
        return FlinkJobStatus.RUNNING

    def terminal_by(self, t: float) -> bool:
        return self.terminal_at is not None and t >= self.terminal_at

    def last_modification_at(self, t: float) -> int:
        """The overview's ``last-modification`` (ms): the newest task state change by ``t``.

        Tasks change state when a process starts and its tasks come up, when tasks restart and
        come up again, and when the job ends."""
        changes = [self.submitted]
        for process in self.processes:
            changes += (process.began, process.began + _INITIALIZING_FOR)
            for restart in process.task_restarts:
                changes += (restart, restart + _RESTARTING_FOR)
        if self.terminal_at is not None:
            changes.append(self.terminal_at)
        return epoch_ms(max(c for c in changes if c <= t))


# -- what the probe reads ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Answer:
    """One probe at ``at``: each source's snapshot time, or ``None`` for no answer."""

    at: float
    overview_at: float | None
    metrics_at: float | None
    raw_max_age: float
    overview_max_age: float | None = None
    """The age the probe claims for the overview answer (None: the target's bound)."""


@dataclass(frozen=True, slots=True)
class Run:
    """A history, the real lags of its sources, the configured lags and the probes' answers."""

    history: TrueHistory
    overview_lag: float
    """Real bound E: every overview snapshot is at most this old."""
    metrics_lag: float
    """Real bound M: every metric snapshot is at most this old."""
    lags: Lags
    """What the daemon is configured with (at least the real bounds)."""
    answers: tuple[Answer, ...]

    def sighting(self, answer: Answer) -> Sighting:
        truth = self.history
        epoch: int | None = None
        terminal = False
        if answer.overview_at is not None and truth.exists_at(answer.overview_at):
            epoch = truth.epoch_at(answer.overview_at)
            terminal = truth.terminal_by(answer.overview_at)
        raw: int | None = None
        if answer.metrics_at is not None and truth.exists_at(answer.metrics_at):
            raw = truth.num_restarts_at(answer.metrics_at)
        return Sighting(
            epoch=epoch,
            terminal=terminal,
            raw=raw,
            raw_max_age=answer.raw_max_age,
            epoch_max_age=answer.overview_max_age,
        )

    def observation(self, answer: Answer) -> Observation:
        """The same answer as the Job fold sees it (an overview miss is an unreachable cluster)."""
        sighting = self.sighting(answer)
        if answer.overview_at is None:
            return Observation(
                at=answer.at,
                presence=Presence.UNREACHABLE,
                num_restarts=sighting.raw,
                num_restarts_max_age=sighting.raw_max_age,
            )
        if sighting.epoch is None:
            return Observation(at=answer.at, presence=Presence.UNCONFIRMED)
        status = self.history.status_at(answer.overview_at)
        return Observation(
            at=answer.at,
            presence=Presence.FOUND,
            status=status,
            start_time=sighting.epoch,
            start_time_max_age=answer.overview_max_age,
            num_restarts=sighting.raw,
            num_restarts_max_age=sighting.raw_max_age,
            failure_message="boom" if status is FlinkJobStatus.FAILED else None,
        )

    def true_count(self, answer: Answer) -> int:
        return self.history.true_count(answer.at)

    def with_answers(self, answers: Iterable[Answer]) -> Run:
        return replace(self, answers=(*self.answers, *answers))

    def fresh_answer(self, at: float) -> Answer:
        """A probe at ``at`` whose both sources answer with the truth of that instant."""
        return Answer(at=at, overview_at=at, metrics_at=at, raw_max_age=self.lags.metrics_max_age)

    def describe(self) -> str:
        """A readable timeline (seconds after submission), for counterexamples."""

        def rel(t: float | None) -> str:
            return "-" if t is None else f"{t - BASE:g}"

        truth = self.history
        skew = self.lags.max_clock_skew
        lines = [
            f"real lags E={self.overview_lag:g}s M={self.metrics_lag:g}s; configured "
            f"E={self.lags.overview_max_age:g}s M={self.lags.metrics_max_age:g}s "
            f"K={'off' if skew is None else f'{skew:g}s'}; JobManager clock "
            f"{truth.clock_offset:+g}s",
        ]
        # What happened after the last probe cannot matter: leave it out.
        horizon = self.answers[-1].at if self.answers else math.inf
        for process in truth.processes:
            if process.began > horizon:
                lines.append("  (later process changes left out)")
                break
            restarts = ", ".join(rel(r) for r in process.task_restarts if r <= horizon)
            lines.append(
                f"  process {process.how.value} at {rel(process.began)} "
                f"(start-time {process.start_time}): task restarts at {restarts or 'none'}"
            )
        if truth.terminal_at is not None and truth.terminal_at <= horizon:
            lines.append(f"  {truth.terminal_status} at {rel(truth.terminal_at)}")
        for answer in self.answers:
            sighting = self.sighting(answer)
            claimed = (
                "" if answer.overview_max_age is None else f" (max age {answer.overview_max_age:g})"
            )
            lines.append(
                f"  probe at {rel(answer.at)}: overview as of {rel(answer.overview_at)}"
                f"{claimed} -> epoch {sighting.epoch} terminal={sighting.terminal}; metrics as of "
                f"{rel(answer.metrics_at)} -> raw {sighting.raw} (max age "
                f"{sighting.raw_max_age:g}); true {self.true_count(answer)}"
            )
        return "\n".join(lines)


@contextmanager
def described(run: Run) -> Iterator[None]:
    """Show the run's timeline with a failing assertion (computed only on failure: it is slow)."""
    try:
        yield
    except AssertionError:
        note(run.describe())
        raise


def replay(
    run: Run, answers: Sequence[Answer] | None = None, ledger: RestartLedger | None = None
) -> list[RestartLedger]:
    """The ledger after each answer (all of the run's by default), from ``ledger`` or empty."""
    current = RestartLedger() if ledger is None else ledger
    ledgers = []
    for answer in run.answers if answers is None else answers:
        current = observe(current, answer.at, run.sighting(answer), run.lags)
        ledgers.append(current)
    return ledgers


def naive_observed(run: Run) -> list[int]:
    """The NAIVE rule after each answer: a new start-time seals the old epoch's count plus one,
    and an epoch's count is the highest raw read while it was the newest start-time seen."""
    epoch: int | None = None
    sealed = credit = observed = 0
    result = []
    for answer in run.answers:
        sighting = run.sighting(answer)
        if sighting.epoch is not None and (epoch is None or sighting.epoch > epoch):
            if epoch is not None:
                sealed += credit + 1
                credit = 0
            epoch = sighting.epoch
        if sighting.raw is not None:
            credit = max(credit, sighting.raw)
        observed = max(observed, sealed + credit)
        result.append(observed)
    return result


# -- the read plan -----------------------------------------------------------------------------
JID = "0123456789abcdef0123456789abcdef"
"""The simulated job's Flink id, for the read plan."""


def overview_signature(run: Run, answer: Answer) -> Signature | None:
    """What the overview of this answer shows, or None when it did not answer."""
    if answer.overview_at is None or not run.history.exists_at(answer.overview_at):
        return None
    truth = run.history
    at = answer.overview_at
    return (truth.status_at(at), truth.epoch_at(at), truth.last_modification_at(at))


def replay_planned(run: Run, plan: ReadPlan) -> tuple[list[RestartLedger], list[Answer]]:
    """Replay the run as the daemon reads with a plan (probe/_core/reads.py): without an overview
    nothing is read (the round stops there); otherwise the metric only when the plan wants it.
    Returns the ledgers and the answers as used."""
    ledger = RestartLedger()
    ledgers, used = [], []
    for answer in run.answers:
        shown = overview_signature(run, answer)
        if shown is None or not plan.wants(JID, shown, answer.at):
            answer = Answer(answer.at, answer.overview_at, None, math.inf, answer.overview_max_age)
        sighting = run.sighting(answer)
        if shown is not None:
            plan.saw(JID, shown, answer.at, sighting.raw, sighting.raw_max_age)
        ledger = observe(ledger, answer.at, sighting, run.lags)
        ledgers.append(ledger)
        used.append(answer)
    return ledgers, used


def with_quiet_tail(run: Run, step: int) -> Run:
    """Fresh probes every ``step`` ticks after the last change, long enough for a plan to read a
    value from after the last change (M) and for the rule to confirm it (E, one probe)."""
    start = max(tick_of(run.answers[-1].at), tick_of(run.history.last_change))
    if run.history.terminal_at is not None:
        start = max(start, tick_of(run.history.terminal_at))
    window = round((run.lags.metrics_max_age + run.lags.overview_max_age) / TICK) + 3 * step
    ticks = range(start + step, start + window + 2 * step, step)
    return run.with_answers(run.fresh_answer(at_tick(t)) for t in ticks)


# -- generation --------------------------------------------------------------------------------
def generate_history(
    choose: Chooser,
    *,
    process_restarts: bool = True,
    keep_start_time: bool = True,
    terminal: bool | None = None,
    clock_offset: float = 0.0,
) -> TrueHistory:
    """A random true history from submission at BASE, start-times stamped ``clock_offset`` ahead.

    ``terminal``: ``None`` lets chance decide whether the job ends, ``True``/``False`` force it.
    """
    failover_percent = choose.integer(0, 50) if process_restarts else 0
    keep_percent = choose.integer(0, 20) if process_restarts and keep_start_time else 0
    submitted = epoch_ms(BASE + clock_offset)
    processes = [Process(began=BASE, start_time=submitted, how=ProcessStart.SUBMISSION)]
    restarts: list[float] = []
    tick = 0
    for _ in range(choose.integer(0, 30)):
        tick += choose.integer(0, 80)
        if choose.chance(failover_percent):
            how = ProcessStart.FAILOVER
            if at_tick(tick) == processes[-1].began:
                tick += 1  # a takeover stamps its own time, later than the one it follows
        elif choose.chance(keep_percent):
            how = ProcessStart.KEEP_START_TIME
        else:
            restarts.append(at_tick(tick))
            continue
        t = at_tick(tick)
        previous = processes[-1]
        processes[-1] = replace(previous, task_restarts=tuple(restarts))
        restarts = []
        start_time = previous.start_time
        if how is ProcessStart.FAILOVER:
            start_time = epoch_ms(t + clock_offset)
        processes.append(Process(began=t, start_time=start_time, how=how))
    processes[-1] = replace(processes[-1], task_restarts=tuple(restarts))
    ends = choose.chance(30) if terminal is None else terminal
    if not ends:
        return TrueHistory(processes=tuple(processes), clock_offset=clock_offset)
    statuses = (FlinkJobStatus.FINISHED, FlinkJobStatus.FAILED, FlinkJobStatus.CANCELED)
    return TrueHistory(
        processes=tuple(processes),
        terminal_at=at_tick(tick + choose.integer(1, 80)),
        terminal_status=statuses[choose.integer(0, 2)],
        clock_offset=clock_offset,
    )


class JobManagerClock(Enum):
    """Where the JobManagers' clock is, against the bound K the daemon is configured with."""

    WITHIN_BOUND = "within the bound"
    AHEAD_BEYOND_BOUND = "ahead beyond the bound"


def choose_clock(choose: Chooser, clock: JobManagerClock) -> tuple[float | None, float]:
    """The configured bound K (None: the successor rule off) and the JobManagers' offset (s)."""
    bound = choose.integer(1, 8)  # ticks: 0.25 s to 2 s
    if clock is JobManagerClock.AHEAD_BEYOND_BOUND:
        return bound * TICK, (bound + choose.integer(1, 40)) * TICK
    if choose.chance(10):
        return None, choose.integer(-40, 40) * TICK  # off: the start-times' clock is not used
    return bound * TICK, choose.integer(-bound, bound) * TICK


def generate_run(
    choose: Chooser,
    *,
    process_restarts: bool = True,
    keep_start_time: bool = True,
    terminal: bool | None = None,
    max_probes: int = 40,
    clock: JobManagerClock = JobManagerClock.WITHIN_BOUND,
) -> Run:
    """A random history and the answers of probes at increasing times with lagging sources."""
    max_clock_skew, clock_offset = choose_clock(choose, clock)
    history = generate_history(
        choose,
        process_restarts=process_restarts,
        keep_start_time=keep_start_time,
        terminal=terminal,
        clock_offset=clock_offset,
    )
    overview_lag = choose.integer(0, 20)  # ticks: up to 5 s
    metrics_lag = choose.integer(0, 100)  # ticks: up to 25 s
    # The daemon's configured bounds must be at least the real lags; sometimes they are looser.
    overview_slack = choose.integer(1, 4) if choose.chance(20) else 0
    metrics_slack = choose.integer(1, 40) if choose.chance(20) else 0
    lags = Lags(
        overview_max_age=(overview_lag + overview_slack) * TICK,
        metrics_max_age=(metrics_lag + metrics_slack) * TICK,
        max_clock_skew=max_clock_skew,
    )
    overview_missing = choose.integer(0, 50)
    metrics_missing = choose.integer(0, 50)
    answers = []
    tick = choose.integer(0, 60)
    last_overview = last_metrics = -math.inf
    for index in range(choose.integer(1, max_probes)):
        if index:
            tick += choose.integer(2, 60)  # 0.5 s to 15 s between probes
        overview_at: float | None = None
        overview_max_age: float | None = None
        if not choose.chance(overview_missing):
            overview_at = max(last_overview, at_tick(tick - choose.integer(0, overview_lag)))
            last_overview = overview_at
            if choose.chance(15):
                # The probe knows this answer's age better than the target's bound (a live
                # /jobs/:jid/status, say): any claim at least the real age is sound.
                overview_max_age = at_tick(tick) - overview_at + choose.integer(0, 8) * TICK
        metrics_at: float | None = None
        if not choose.chance(metrics_missing):
            metrics_at = max(last_metrics, at_tick(tick - choose.integer(0, metrics_lag)))
            last_metrics = metrics_at
        raw_max_age = lags.metrics_max_age
        if choose.chance(10):
            raw_max_age = math.inf  # e.g. the first read after the daemon started
        elif choose.chance(10):
            raw_max_age += choose.integer(1, 40) * TICK
        answers.append(
            Answer(at_tick(tick), overview_at, metrics_at, raw_max_age, overview_max_age)
        )
    return Run(
        history=history,
        overview_lag=overview_lag * TICK,
        metrics_lag=metrics_lag * TICK,
        lags=lags,
        answers=tuple(answers),
    )


@st.composite
def runs(
    draw: st.DrawFn,
    *,
    process_restarts: bool = True,
    keep_start_time: bool = True,
    terminal: bool | None = None,
    max_probes: int = 40,
    clock: JobManagerClock = JobManagerClock.WITHIN_BOUND,
) -> Run:
    """Hypothesis strategy of ``generate_run``."""
    return generate_run(
        DataChooser(draw),
        process_restarts=process_restarts,
        keep_start_time=keep_start_time,
        terminal=terminal,
        max_probes=max_probes,
        clock=clock,
    )


def generate_failover_after_a_read(choose: Chooser) -> Run:
    """A raw count read, then a failover more than K after it on the JobManagers' clock (itself
    within K of the daemon's), before any overview showed the raw's epoch current after the read.

    The first epoch is seen at the first probe and its count moves last just before a probe
    that reads it, M or more after the first; overviews then answer for less than E (each too
    old to confirm the read), and not at all until the successor runs; a quiet tail follows.
    Every restart of both epochs is read, so the truth is reachable."""
    skew = choose.integer(1, 8)  # ticks: 0.25 s to 2 s
    offset = choose.integer(-skew, skew)
    overview_lag = choose.integer(1, 20)  # none would confirm the read at once
    metrics_lag = choose.integer(0, 100)
    lags = Lags(overview_lag * TICK, metrics_lag * TICK, skew * TICK)

    before = [choose.integer(0, 40)]
    while choose.chance(60):
        before.append(before[-1] + choose.integer(2, 60))
    read = max(before[-1], before[0] + metrics_lag) + choose.integer(1, 40)
    old_restarts = [read - choose.integer(0, read - before[-1] - 1)]
    for _ in range(choose.integer(0, 5)):
        old_restarts.insert(0, max(1, old_restarts[0] - choose.integer(1, 40)))
    failover = read + skew - offset + choose.integer(1, 40)
    after = [read]
    while choose.chance(50) and after[-1] + 1 < min(read + overview_lag, failover):
        after.append(choose.integer(after[-1] + 1, min(read + overview_lag, failover) - 1))
    new_restarts = [failover]
    for _ in range(choose.integer(0, 5)):
        new_restarts.append(new_restarts[-1] + choose.integer(1, 40))
    seen = new_restarts[-1] + choose.integer(1, 40)
    shown = seen + max(1, metrics_lag)
    credited = shown + max(1, overview_lag)

    clock_offset = offset * TICK
    history = TrueHistory(
        processes=(
            Process(
                BASE,
                epoch_ms(BASE + clock_offset),
                ProcessStart.SUBMISSION,
                tuple(at_tick(t) for t in old_restarts),
            ),
            Process(
                at_tick(failover),
                epoch_ms(at_tick(failover) + clock_offset),
                ProcessStart.FAILOVER,
                tuple(at_tick(t) for t in new_restarts[1:]),
            ),
        ),
        clock_offset=clock_offset,
    )
    run = Run(history, overview_lag * TICK, metrics_lag * TICK, lags, ())
    ticks = (*before, *after, seen, shown, credited)
    return run.with_answers(run.fresh_answer(at_tick(t)) for t in ticks)


@st.composite
def failovers_after_a_read(draw: st.DrawFn) -> Run:
    """Hypothesis strategy of ``generate_failover_after_a_read``."""
    return generate_failover_after_a_read(DataChooser(draw))
