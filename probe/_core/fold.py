"""Folding one probe's observation into a Job: the pure heart of the daemon (no I/O).

``fold(record, observation, settings)`` returns the new record and what happened (state
transitions, restart increases). The scheduler calls it for every probed Job and stores the
results of a round in one batch.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Final

from probe._core.causes import MAX_CAUSES, RootCause
from probe._core.model import (
    Failure,
    FailureReason,
    FlinkJobStatus,
    Job,
    JobState,
    Started,
    from_epoch,
    replace_model,
)
from probe._core.record import JobRecord
from probe._core.restarts import Lags, RestartLedger, Sighting, observe
from probe._core.states import check_transition, route


class Presence(StrEnum):
    """Where the probe found the Flink job."""

    FOUND = "found"
    """The cluster answered and the job is there: status and start-time are known."""
    GONE = "gone"
    """Absent from a well-formed overview, and ``/jobs/:jid`` answered 404."""
    UNCONFIRMED = "unconfirmed"
    """Absent from a well-formed overview, but ``/jobs/:jid`` did not answer clearly."""
    UNREACHABLE = "unreachable"
    """No well-formed answer from the cluster: nothing is known."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What one probe of one Job learnt, at time ``at`` (seconds since the Unix epoch)."""

    at: float
    presence: Presence
    status: FlinkJobStatus = FlinkJobStatus.UNKNOWN
    start_time: int | None = None
    start_time_max_age: float | None = None
    """How old status and start-time may be (None: the target's ``overview_max_age``)."""
    num_restarts: int | None = None
    num_restarts_max_age: float = math.inf
    """How old ``num_restarts`` may be; infinite when unknown (it is then never credited)."""
    failure_message: str | None = None
    root_causes: tuple[RootCause, ...] = ()
    """Entries of Flink's exception history, when the probe read it (newest first or not)."""


@dataclass(frozen=True, slots=True)
class FoldSettings:
    not_found_grace: int
    start_timeout: float
    lags: Lags


@dataclass(frozen=True, slots=True)
class Transitioned:
    source: JobState
    target: JobState


@dataclass(frozen=True, slots=True)
class RestartsIncreased:
    before: int
    after: int
    causes: tuple[RootCause, ...] = ()
    """The root causes Flink reported since the count last grew, oldest first."""


@dataclass(frozen=True, slots=True)
class EpochChanged:
    """A new JobManager took the job over: its ``start-time`` moved (ms)."""

    before: int
    after: int


Change = Transitioned | RestartsIncreased | EpochChanged


@dataclass(frozen=True, slots=True)
class FoldResult:
    record: JobRecord
    changes: tuple[Change, ...]
    stored: bool = True
    """False when nothing moved but the probe's time (``last_probe_at``, when the epoch was
    last seen): such a record may be shown before it is stored (`JobBook.touch`); a count or a
    state is only ever shown once stored."""


def fold(record: JobRecord, obs: Observation, settings: FoldSettings) -> FoldResult:
    found = obs.presence is Presence.FOUND
    sighting = Sighting(
        epoch=obs.start_time if found else None,
        terminal=found and obs.status.is_globally_terminal,
        raw=obs.num_restarts,
        raw_max_age=obs.num_restarts_max_age,
        epoch_max_age=obs.start_time_max_age,
    )
    ledger = observe(record.ledger, obs.at, sighting, settings.lags)
    if obs.root_causes:
        record = _with_causes(record, obs.root_causes)
    job = record.job
    started = job.status.started
    if (
        found
        and started is not None
        and obs.status is started.observed_flink_job_status
        and ledger.observed == started.observed_flink_job_restarts
        and ledger.epoch == record.ledger.epoch
        and not route(job.state, obs.status)
    ):
        # The steady state of a running job, nearly every probe: nothing moves but the
        # probe's time (and maybe an unconfirmed raw), which the record carries apart.
        causes, seen = record.causes, record.causes_seen
        if record.missing_probes == 0 and _same_count(record.ledger, ledger):
            return FoldResult(JobRecord(job, ledger, 0, obs.at, causes, seen), (), stored=False)
        job = _stored_probe(job, from_epoch(obs.at))
        return FoldResult(JobRecord(job, ledger, 0, obs.at, causes, seen), ())
    return fold_changed(record, obs, settings, ledger)


def _with_causes(record: JobRecord, causes: tuple[RootCause, ...]) -> JobRecord:
    """The record with the root causes not taken yet added to those awaiting a restart."""
    fresh = record.causes_seen.new(causes)
    if not fresh:
        return record
    return replace(
        record,
        causes=(*record.causes, *fresh)[-MAX_CAUSES:],
        causes_seen=record.causes_seen.taking(fresh),
    )


def _same_count(before: RestartLedger, after: RestartLedger) -> bool:
    """Whether the ledger moved only in what probing learns again if the move is lost: when
    the epoch was last seen, and raws awaiting confirmation. (The stored ledger is then a real
    earlier state of this one, and the rule holds from any earlier state with fewer answers.)"""
    return _count_fields(before) == _count_fields(after)


_count_fields: Final = operator.attrgetter(
    *(f.name for f in fields(RestartLedger) if f.name not in ("epoch_current_until", "pending"))
)


def _stored_probe(job: Job, now: datetime) -> Job:
    """The Job probed at ``now`` with nothing else moved, as a stored change."""
    started = job.status.started
    assert started is not None
    status = replace_model(job.status, started=replace_model(started, last_update_time=now))
    metadata = job.metadata
    return replace_model(
        job,
        metadata=replace_model(
            metadata, modified_at=now, resource_version=metadata.resource_version + 1
        ),
        status=status,
    )


def fold_changed(
    record: JobRecord, obs: Observation, settings: FoldSettings, ledger: RestartLedger
) -> FoldResult:
    """``fold`` for an observation that may change more than times; ``ledger`` is the record's
    ledger with the observation folded in."""
    found = obs.presence is Presence.FOUND
    job = record.job
    missing = 0 if found else record.missing_probes
    if obs.presence is Presence.GONE and ledger.seen:
        missing += 1

    targets, failure = _next_states(job, obs, ledger, missing, settings)
    changes: list[Change] = []
    before_epoch = record.ledger.epoch
    if before_epoch is not None and ledger.epoch is not None and ledger.epoch != before_epoch:
        changes.append(EpochChanged(before_epoch, ledger.epoch))
    status = job.status
    now = from_epoch(obs.at)
    source = job.state
    for target in targets:
        check_transition(source, target)
        changes.append(Transitioned(source, target))
        if target is JobState.STARTED and status.started is None:
            status = replace_model(
                status,
                started=Started(
                    flink_job_id=job.flink_job_id,
                    transition_time=now,
                    last_update_time=now,
                    observed_flink_job_restarts=0,
                    observed_flink_job_status=obs.status,
                ),
            )
        source = target
    status = replace_model(status, state=source, failure=failure or status.failure)

    if status.started is not None:
        before = status.started.observed_flink_job_restarts
        flink_status = obs.status if found else FlinkJobStatus.UNKNOWN
        if source.is_final and not found:
            # A final Job's status is frozen at its last sighting (it is only settling its count).
            flink_status = status.started.observed_flink_job_status
        status = replace_model(
            status,
            started=replace_model(
                status.started,
                last_update_time=now,
                observed_flink_job_restarts=ledger.observed,
                observed_flink_job_status=flink_status,
            ),
        )
        if ledger.observed > before:
            changes.append(RestartsIncreased(before, ledger.observed, record.causes))
            record = replace(record, causes=())

    if status != job.status:
        metadata = replace_model(
            job.metadata,
            modified_at=now,
            resource_version=job.metadata.resource_version + 1,
            terminated_at=job.metadata.terminated_at or (now if source.is_final else None),
        )
        job = replace_model(job, metadata=metadata, status=status)
    record = replace(record, job=job, ledger=ledger, missing_probes=missing, last_probe_at=obs.at)
    return FoldResult(record, tuple(changes))


def _next_states(
    job: Job, obs: Observation, ledger: RestartLedger, missing: int, settings: FoldSettings
) -> tuple[tuple[JobState, ...], Failure | None]:
    """The states this observation moves the Job through, and the failure if it ends FAILED."""
    now = from_epoch(obs.at)
    state = job.state
    if state.is_final:
        return (), None
    if obs.presence is Presence.FOUND:
        steps = route(state, obs.status)
        if steps and steps[-1] is JobState.FAILED:
            message = obs.failure_message or "Flink reported the job FAILED"
            return steps, Failure(
                reason=FailureReason.FLINK_JOB_FAILED, message=message, failed_at=now
            )
        return steps, None
    if obs.presence is not Presence.GONE:
        return (), None  # an unreachable or misbehaving cluster changes no state
    if ledger.seen and missing >= settings.not_found_grace:
        message = (
            f"Flink job {job.flink_job_id} not found on target {job.target!r} "
            f"for {missing} probes in a row"
        )
        return (JobState.FAILED,), Failure(
            reason=FailureReason.FLINK_JOB_NOT_FOUND, message=message, failed_at=now
        )
    started_for = obs.at - job.metadata.created_at.timestamp()
    if state is JobState.STARTING and not ledger.seen and started_for >= settings.start_timeout:
        message = (
            f"Flink job {job.flink_job_id} not seen on target {job.target!r} "
            f"within {settings.start_timeout:g}s of the Job's creation"
        )
        return (JobState.FAILED,), Failure(
            reason=FailureReason.START_TIMEOUT, message=message, failed_at=now
        )
    return (), None
