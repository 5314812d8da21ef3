"""The probe scheduler: one loop per target, each round folded into the Jobs and committed.

Every target runs its own loop, so a dead, slow or hanging cluster delays only itself. A loop
wakes on a fixed grid (``start + offset + k * interval``, no drift) with a per-target offset
that spreads the targets over the interval, runs one round (``Prober``), folds each Job's
observation (``fold``) and hands the new records to the ``JobBook``, which commits them in one
batch. A target whose overview fails is retried with a capped backoff; its Jobs show UNKNOWN.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio
import structlog

from probe._cogs.logs import get_logger
from probe._core.events import Reason, job_events, target_event
from probe._core.fold import (
    FoldResult,
    FoldSettings,
    RestartsIncreased,
    Transitioned,
    fold,
)
from probe._core.model import SOURCE_DISCOVERY, InvalidJobId, from_epoch, job_id_from_jid, new_job
from probe._core.record import JobRecord
from probe._flink.client import OverviewEntry
from probe._runtime.book import JobBook, event_row
from probe._runtime.instruments import DaemonMetrics
from probe._runtime.prober import Prober, RequestFailure, Round
from probe._store import StoredEvent

log = get_logger("flink_probe.scheduler")

# An unreachable target is retried after interval * 2**(failures - 1), at most this many intervals.
MAX_BACKOFF_INTERVALS = 4
# First rounds are spread over this many seconds (or the interval, if shorter): ready soon
# after start, yet the targets' first overviews are not one burst.
FIRST_ROUND_SPREAD = 0.25


@dataclass(slots=True)
class TargetHealth:
    """What the scheduler knows of one target, read by metrics, /readyz and logs."""

    up: bool = False
    probed: bool = False
    last_probe_at: float | None = None
    last_error: str | None = None
    jobs: int = 0


@dataclass(slots=True)
class Target:
    """A target as the scheduler runs it."""

    name: str
    namespace: str
    discover: bool
    prober: Prober
    fold_settings: FoldSettings
    deployment: str | None = None
    """The deployment name of the Jobs discovery creates (None: each Flink job's own name)."""
    settings: Hashable = None
    """Everything the target was built from: a reload restarts its loop only if this changed."""
    health: TargetHealth = field(default_factory=TargetHealth)
    failures: int = 0
    episode: frozenset[tuple[str, str]] = frozenset()
    """The (endpoint, reason) pairs that failed since the last round without errors: each is
    logged when it first fails, and the episode ends with the next round without errors. (A
    failing overview hides the per-job requests' faults, so a round's own set flaps.)"""
    reported_down: bool = False
    """A TARGET_UNREACHABLE event was the target's last event."""
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    first_round: anyio.Event = field(default_factory=anyio.Event)
    """Set once the target's first round is in the book."""


class Scheduler:
    def __init__(
        self,
        book: JobBook,
        targets: Iterable[Target],
        interval: float,
        metrics: DaemonMetrics,
        declared: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.declared = frozenset(declared)
        """Ids of the Jobs in the configuration's ``jobs:``; other config-made Jobs are history."""
        self.targets = {t.name: t for t in targets}
        self.interval = interval
        self.metrics = metrics
        self._clock = clock
        self._stopping = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        self.first_round_done = anyio.Event()
        """Set once every target was probed once (answered or not)."""
        self._progress = anyio.Event()
        """Set and replaced whenever a target starts or ends its first round (`first_round`)."""
        self.heartbeat = time.monotonic()
        """Updated by every loop iteration: /healthz reads it to tell the loop is alive."""

    @property
    def health(self) -> Mapping[str, TargetHealth]:
        return {name: target.health for name, target in self.targets.items()}

    def health_of(self, name: str) -> TargetHealth | None:
        """The health of target `name`, if it runs here."""
        target = self.targets.get(name)
        return None if target is None else target.health

    @property
    def all_probed(self) -> bool:
        return all(t.health.probed for t in self.targets.values())

    def stop(self) -> None:
        """Start no new round; rounds in flight run on (the caller bounds them)."""
        self._stopping.set()

    async def run(self) -> None:
        """Run every target's loop until ``stop``; returns once the rounds in flight ended."""
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            for target in self.targets.values():
                self._start(target)
            if not self.targets:
                self.first_round_done.set()
            await self._stopping.wait()

    def reconfigure(
        self,
        settings: Mapping[str, Hashable],
        build: Callable[[str], Target],
        interval: float,
        declared: Iterable[str],
    ) -> None:
        """Run the targets named in `settings` (each with what it is built from): new ones are
        built and start, removed or changed ones stop (a round in flight is cancelled),
        unchanged ones run on undisturbed; Jobs no longer declared leave the schedule (they
        stay as history)."""
        self.declared = frozenset(declared)
        for name, running in list(self.targets.items()):
            if name not in settings or settings[name] != running.settings:
                running.scope.cancel()
                del self.targets[name]
                log.info("target stopped", target=name)
        self.interval = interval
        for name in settings:
            if name not in self.targets:
                target = self.targets[name] = build(name)
                self._start(target)
                log.info("target started", target=name)

    def start_target(self, target: Target) -> None:
        """Run ``target``'s loop (its lease is newly held), replacing one running by its name."""
        self.stop_target(target.name)
        self.targets[target.name] = target
        self._start(target)
        log.info("target started", target=target.name)

    def stop_target(self, name: str) -> None:
        """Stop a target's loop (its lease is lost); a round in flight is cancelled."""
        running = self.targets.pop(name, None)
        if running is not None:
            running.scope.cancel()
            log.info("target stopped", target=name)

    async def first_round(self, name: str) -> None:
        """Until the target `name`, running or started later, has its first round in the book;
        the caller bounds the wait."""
        while (target := self.targets.get(name)) is None or not target.first_round.is_set():
            await self._progress.wait()

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    def _start(self, target: Target) -> None:
        if self._task_group is not None:  # else run() starts it with the others
            self._task_group.start_soon(self._run_loop, target, name=f"probe-loop:{target.name}")
        self._progressed()

    async def _run_loop(self, target: Target) -> None:
        with target.scope:
            await self._loop(target)

    async def _loop(self, target: Target) -> None:
        start = time.monotonic()
        grid = start + _offset(target.name, self.interval)
        # The first round comes within FIRST_ROUND_SPREAD, so the daemon is ready (every target
        # probed once) soon after start; later rounds keep to the target's place in the interval.
        due = start + _offset(target.name, min(self.interval, FIRST_ROUND_SPREAD))
        while not self._stopping.is_set():
            with anyio.move_on_after(max(0.0, due - time.monotonic())):
                await self._stopping.wait()
            if self._stopping.is_set():
                return
            began = time.monotonic()
            self.heartbeat = began
            self.metrics.scheduler_lag.observe(began - due)
            await self.probe_round(target, first=not target.health.probed)
            if not target.first_round.is_set():
                target.first_round.set()
                self._progressed()
            if target.health.up:
                target.failures = 0
                earliest = due + self.interval
            else:
                target.failures += 1
                backoff = min(2 ** (target.failures - 1), MAX_BACKOFF_INTERVALS)
                earliest = due + backoff * self.interval
            # Stay on the grid; rounds whose time passed while this one ran are skipped.
            planned = self._grid_point(grid, earliest)
            due = self._grid_point(grid, max(planned, time.monotonic()))
            skipped = round((due - planned) / self.interval)
            if skipped > 0:
                self.metrics.rounds_skipped.labels(target.name).inc(skipped)

    def _grid_point(self, grid: float, at_or_after: float) -> float:
        return grid_point(grid, self.interval, at_or_after)

    async def probe_round(self, target: Target, first: bool = False) -> None:
        """One round for one target: request, fold, hand to the book."""
        began = time.monotonic()
        with structlog.contextvars.bound_contextvars(target=target.name):
            overview = await target.prober.overview()
            self._mark_probed(target)
            if first:
                # Every target's first overview goes before any Job's requests, so readiness
                # does not queue behind them; bounded, so a hanging target holds no one long.
                with anyio.move_on_after(FIRST_ROUND_SPREAD + 1):
                    await self.first_round_done.wait()
            records = [
                record
                for record in self.book.probing(target.name)
                if record.job.discovered or record.job.id in self.declared
            ]
            if overview.entries is not None and target.discover:
                records.extend(self._discover(target, overview.entries, records))
            found = await target.prober.observe(overview, records)
            folded = [self._fold(target, record, found) for record in records]
            stored = [f for f in folded if f.stored]
            events = [
                event_row(event, target.name)
                for f in stored
                if f.changes
                for event in job_events(f.record.job, f.changes, f.record.last_probe_at or 0.0)
            ]
            self.book.put([f.record for f in stored], events + self._target_events(target, found))
            self.book.touch([f.record for f in folded if not f.stored])
            self._account(target, found, time.monotonic() - began, len(records))

    def _discover(
        self, target: Target, overview: Sequence[OverviewEntry], probing: list[JobRecord]
    ) -> list[JobRecord]:
        """New Jobs for Flink jobs of the cluster the daemon does not know yet."""
        now = from_epoch(self._clock())
        found = []
        known = {record.job.flink_job_id for record in probing}  # most of the overview
        for entry in overview:
            if entry.jid in known:
                continue
            try:
                job_id = job_id_from_jid(entry.jid)
            except InvalidJobId:
                continue  # the parser only lets 32-hex ids through; kept for safety
            if self.book.get(job_id) is not None:
                continue
            job = new_job(
                job_id=job_id,
                namespace=target.namespace,
                deployment_name=target.deployment or entry.name,
                target=target.name,
                source=SOURCE_DISCOVERY,
                spec={"target": target.name},
                now=now,
            )
            log.info("job discovered", job_id=job_id, flink_job_name=entry.name, flink=entry.state)
            found.append(JobRecord(job))
        # Claim the ids now: another target's round (two targets may show the same cluster)
        # must not discover them again while this round is still probing them.
        self.book.create(found)
        return found

    def _fold(self, target: Target, record: JobRecord, found: Round) -> FoldResult:
        observation = found.observations[record.job.id]
        folded = fold(record, observation, target.fold_settings)
        job = folded.record.job
        for event in folded.changes:
            if isinstance(event, Transitioned):
                log.info(
                    "job state changed",
                    job_id=job.id,
                    source=event.source.value,
                    state=event.target.value,
                    flink=observation.status.value,
                    failure=job.status.failure.message if job.status.failure else None,
                )
            elif isinstance(event, RestartsIncreased):
                log.info(
                    "job restarts increased",
                    job_id=job.id,
                    before=event.before,
                    restarts=event.after,
                )
        return folded

    def _target_events(self, target: Target, found: Round) -> list[StoredEvent]:
        """TARGET_UNREACHABLE when a target stops answering, TARGET_REACHABLE when it is back."""
        if found.up == target.reported_down:
            target.reported_down = not found.up
            reason = Reason.TARGET_REACHABLE if found.up else Reason.TARGET_UNREACHABLE
            event = target_event(
                reason,
                target=target.name,
                namespace=target.namespace,
                deployment_name=target.deployment,
                at=self._clock(),
                error=None if found.up else str(found.overview.error),
            )
            log.info("target event", reason=reason.value)
            return [event_row(event, target.name)]
        return []

    def _account(self, target: Target, found: Round, seconds: float, jobs: int) -> None:
        health = target.health
        health.up, health.jobs = found.up, jobs
        health.last_probe_at = self._clock()
        health.last_error = None if found.up else str(found.overview.error)
        self.metrics.probes.labels(target.name, "success" if found.up else "failure").inc()
        self.metrics.probe_duration.labels(target.name).observe(seconds)
        self.metrics.requests.labels(target.name).inc(found.requests)
        for failure in found.failures:
            self.metrics.request_errors.labels(
                target.name, failure.endpoint, failure.error.kind.value
            ).inc()
        self._log_episode(target, found.failures)
        log.debug(
            "probe round",
            up=found.up,
            jobs=jobs,
            requests=found.requests,
            errors=len(found.failures),
            seconds=round(seconds, 4),
        )

    def _mark_probed(self, target: Target) -> None:
        """A target counts as probed once its overview answered (or failed): /readyz and
        READY=1 need not wait for every Job's requests."""
        target.health.probed = True
        # Once set it stays set: scanning every target each round is quadratic in targets.
        if not self.first_round_done.is_set() and self.all_probed:
            self.first_round_done.set()

    def _log_episode(self, target: Target, failures: Sequence[RequestFailure]) -> None:
        """Log a fault once when it starts and once when it ends, not on every round."""
        now_failing = frozenset((f.endpoint, f.error.kind.value) for f in failures)
        started = now_failing - target.episode
        if started:
            first = {f.endpoint: str(f.error) for f in failures}
            log.warning(
                "requests failing",
                failing=sorted(f"{e}:{r}" for e, r in started),
                example=next(first[e] for e, _ in sorted(started)),
            )
        if target.episode and not now_failing:
            log.info("requests recovered", previously=sorted(f"{e}:{r}" for e, r in target.episode))
        target.episode = target.episode | now_failing if now_failing else frozenset()


def grid_point(grid: float, interval: float, at_or_after: float) -> float:
    """The first time of a grid (``grid + k * interval``, k >= 0) not before a time."""
    # A time on the grid plus an interval computes a hair past the next point in floating
    # point; taken as later than it, that would skip a round.
    slots = math.ceil((at_or_after - grid) / interval - 1e-6)
    return grid + max(0, slots) * interval


def _offset(name: str, interval: float) -> float:
    """A stable spread of the targets over the interval (the same after every restart)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return interval * int.from_bytes(digest) / 2**64
