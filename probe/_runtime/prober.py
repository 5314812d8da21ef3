"""One probe round of one target: the requests, and what they say about each Job.

A round asks ``/jobs/overview`` once, then ``numRestarts`` for the Jobs whose count can have
changed (``ReadPlan``), the exception history of a Job whose count shows restarts not seen yet
(their root causes), ``/jobs/:jid`` for a Job missing from the overview (404 is gone), and the
newest exception of a Job Flink reports FAILED. Each answer's possible age is worked out
from when its request was sent, so the restart rule's windows hold however long the round took.
The scheduler calls ``overview`` and then ``observe``; each returns an immutable value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from probe._core.causes import MAX_CAUSES, RootCause
from probe._core.fold import Observation, Presence
from probe._core.model import FlinkJobStatus
from probe._core.reads import ReadPlan, Signature
from probe._core.record import JobRecord
from probe._flink.client import FlinkClient, FlinkError, OverviewEntry

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TargetLags:
    overview_max_age: float
    metrics_max_age: float
    interval: float
    metrics_refresh: float
    """The longest a Job's numRestarts goes unread while its overview shows no change."""


@dataclass(frozen=True, slots=True)
class RequestFailure:
    """A request of the round that got no usable answer."""

    endpoint: str
    error: FlinkError


@dataclass(frozen=True, slots=True)
class Overview:
    """The answer to a round's ``/jobs/overview``: its entries, or why there are none."""

    entries: tuple[OverviewEntry, ...] | None
    error: FlinkError | None
    sent: float
    """When the request was sent: its entries are at most ``overview_max_age`` older."""


@dataclass(frozen=True, slots=True)
class Round:
    """What one round of one target found."""

    overview: Overview
    observations: Mapping[str, Observation]
    """By Job id, one for every record the round was given."""
    failures: tuple[RequestFailure, ...]
    requests: int

    @property
    def up(self) -> bool:
        return self.overview.entries is not None


@dataclass(slots=True)
class _Findings:
    """What the round's concurrent requests gather before it is frozen into a ``Round``."""

    observations: dict[str, Observation] = field(default_factory=dict)
    failures: list[RequestFailure] = field(default_factory=list)
    requests: int = 0


class Prober:
    """Probes one target. Holds what must outlive a round: when metrics were last asked, and
    which Jobs' counts are known to be read since their last change."""

    def __init__(
        self,
        client: FlinkClient,
        lags: TargetLags,
        concurrency: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.lags = lags
        # Requests in flight to this target: one worker each. The global bound is the shared
        # connector's connection limit (a task or a limiter per request would cost more than
        # the request itself).
        self._concurrency = concurrency
        self._clock = clock
        # Flink's metric fetcher refreshes when asked: a value is as old as the time since the
        # previous request plus its update interval. Unknown after start-up, hence infinite.
        self._previous_metrics_round: float | None = None
        self._reads = ReadPlan(lags.metrics_refresh)

    async def overview(self) -> Overview:
        """Ask the cluster for every job's status, start-time and last modification."""
        sent = self._clock()
        try:
            entries = await self.client.overview()
        except FlinkError as error:
            return Overview(None, error, sent)
        return Overview(tuple(entries), None, sent)

    async def observe(self, overview: Overview, records: Sequence[JobRecord]) -> Round:
        """Observe ``records`` with ``overview`` and the requests it leaves to make."""
        findings = _Findings(requests=1)
        if overview.error is not None:
            findings.failures.append(RequestFailure("overview", overview.error))
        if overview.entries is None:
            now = self._clock()
            for record in records:
                findings.observations[record.job.id] = Observation(
                    at=now, presence=Presence.UNREACHABLE
                )
            return _frozen(overview, findings)
        by_jid = {entry.jid: entry for entry in overview.entries}
        sent = self._clock()
        planned = []
        for record in records:
            fid = record.job.flink_job_id
            entry = by_jid.get(fid)
            read = entry is None or self._reads.wants(fid, _signature(entry), sent)
            planned.append((record, entry, read))
        self._reads.keep_only({record.job.flink_job_id for record in records})
        metrics_gap = math.inf
        if any(read for _, _, read in planned):
            if self._previous_metrics_round is None:
                # A first read's age is unknown, so it credits nothing: one read per target
                # wakes Flink's metric fetcher, and the next round's reads count.
                first = next(i for i, (_, _, read) in enumerate(planned) if read)
                planned = [(r, e, read and i == first) for i, (r, e, read) in enumerate(planned)]
            else:
                metrics_gap = max(0.0, sent - self._previous_metrics_round - self.lags.interval)
            self._previous_metrics_round = sent
        requesting = []
        for record, entry, read in planned:
            if entry is None or read or _wants_failure_message(record, entry):
                requesting.append((record, entry, read))
            else:  # nothing to ask: most Jobs of a quiet cluster
                self._observe(findings, record, entry, overview.sent)
        queue = iter(requesting)  # shared by the workers: each Job is taken once

        async def worker() -> None:
            for record, entry, read in queue:
                await self._probe_job(findings, record, entry, read, overview.sent, metrics_gap)

        async with anyio.create_task_group() as tg:
            for _ in range(min(self._concurrency, len(requesting))):
                tg.start_soon(worker)
        return _frozen(overview, findings)

    async def _probe_job(
        self,
        findings: _Findings,
        record: JobRecord,
        entry: OverviewEntry | None,
        read: bool,
        status_sent: float,
        metrics_gap: float,
    ) -> None:
        fid = record.job.flink_job_id
        presence = Presence.FOUND
        if entry is None:
            status_sent = self._clock()
            try:
                entry = await self._call(findings, self.client.job_details, fid)
            except FlinkError as error:
                findings.failures.append(RequestFailure("details", error))
                presence = Presence.UNCONFIRMED
            else:
                presence = Presence.GONE if entry is None else Presence.FOUND
        if entry is None:
            findings.observations[record.job.id] = Observation(at=self._clock(), presence=presence)
            return

        raw: int | None = None
        metrics_sent = self._clock()
        if read:
            try:
                raw = await self._call(findings, self.client.num_restarts, fid)
            except FlinkError as error:
                findings.failures.append(RequestFailure("metrics", error))

        causes: tuple[RootCause, ...] = ()
        if raw is not None and _wants_causes(record, entry, raw):
            try:
                causes = await self._call(findings, self.client.root_causes, fid, MAX_CAUSES)
            except FlinkError as error:
                findings.failures.append(RequestFailure("exceptions", error))

        message: str | None = None
        if _wants_failure_message(record, entry):
            try:
                message = await self._call(findings, self.client.newest_exception, fid)
            except FlinkError as error:
                findings.failures.append(RequestFailure("exceptions", error))
        self._observe(
            findings, record, entry, status_sent, raw, metrics_sent, metrics_gap, message, causes
        )

    def _observe(
        self,
        findings: _Findings,
        record: JobRecord,
        entry: OverviewEntry,
        status_sent: float,
        raw: int | None = None,
        metrics_sent: float = 0.0,
        metrics_gap: float = math.inf,
        message: str | None = None,
        causes: tuple[RootCause, ...] = (),
    ) -> None:
        """The Job's observation, now, from its overview entry and what its requests got."""
        now = self._clock()
        # How old the value may be: the metric store's lag, plus the time since it was asked.
        raw_max_age = math.inf
        if raw is not None:
            raw_max_age = self.lags.metrics_max_age + metrics_gap + (now - metrics_sent)
        self._reads.saw(record.job.flink_job_id, _signature(entry), now, raw, raw_max_age)
        findings.observations[record.job.id] = Observation(
            at=now,
            presence=Presence.FOUND,
            status=entry.state,
            start_time=entry.start_time,
            start_time_max_age=self.lags.overview_max_age + (now - status_sent),
            num_restarts=raw,
            num_restarts_max_age=raw_max_age,
            failure_message=message,
            root_causes=causes,
        )

    async def _call(
        self, findings: _Findings, request: Callable[..., Awaitable[T]], *args: object
    ) -> T:
        findings.requests += 1
        return await request(*args)


def _frozen(overview: Overview, findings: _Findings) -> Round:
    return Round(overview, dict(findings.observations), tuple(findings.failures), findings.requests)


def _wants_failure_message(record: JobRecord, entry: OverviewEntry) -> bool:
    """A Job Flink reports FAILED gets Flink's reason, unless it is final already."""
    return entry.state is FlinkJobStatus.FAILED and not record.job.state.is_final


def _wants_causes(record: JobRecord, entry: OverviewEntry, raw: int) -> bool:
    """Whether ``raw`` shows restarts the Job's ledger has not seen: their root causes are in
    Flink's exception history now (read only then, never on the quiet path)."""
    ledger = record.ledger
    if ledger.epoch != entry.start_time:
        return raw > 0  # a JobManager not seen before: its whole history is new
    return raw > max((pending.value for pending in ledger.pending), default=ledger.credit)


def _signature(entry: OverviewEntry) -> Signature | None:
    """What of an overview entry moves with every restart; None if Flink did not say."""
    if entry.last_modification is None:
        return None
    return (entry.state, entry.start_time, entry.last_modification)
