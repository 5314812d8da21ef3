"""Events: what happened to a Job (or a target), and why, as Ververica Platform's Event resource.

Pure logic, no I/O. The fold says what moved (states, the count, the JobManager epoch); this
module writes it down as Event resources. An event's id is derived from the Job's id, the
resourceVersion of the change it describes and its reason, so a change derived again after a
crash gives the same event, and the store keeps it once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Final

from pydantic import Field

from probe._core.fold import Change, EpochChanged, RestartsIncreased
from probe._core.model import Job, JobState, Timestamp, _Wire, from_epoch


class Reason(StrEnum):
    """``metadata.name`` of an Event: the machine-readable reason."""

    JOB_STARTING = "JOB_STARTING"
    JOB_STARTED = "JOB_STARTED"
    JOB_RESTARTED = "JOB_RESTARTED"
    JOBMANAGER_FAILOVER = "JOBMANAGER_FAILOVER"
    JOB_TERMINATING = "JOB_TERMINATING"
    JOB_TERMINATED = "JOB_TERMINATED"
    JOB_FINISHED = "JOB_FINISHED"
    JOB_FAILED = "JOB_FAILED"
    TARGET_UNREACHABLE = "TARGET_UNREACHABLE"
    TARGET_REACHABLE = "TARGET_REACHABLE"


_ENTERED: Final = {
    JobState.STARTED: Reason.JOB_STARTED,
    JobState.TERMINATING: Reason.JOB_TERMINATING,
    JobState.TERMINATED: Reason.JOB_TERMINATED,
    JobState.FINISHED: Reason.JOB_FINISHED,
    JobState.FAILED: Reason.JOB_FAILED,
}
"""The event of entering each state (STARTING is entered only by creation)."""

_IDS: Final = uuid.UUID("5f2b7a0e-1c4d-4e8a-9b6f-3d2c1a0e9f87")
"""The uuid5 namespace of event ids."""


class EventMetadata(_Wire):
    id: str
    name: Reason
    namespace: str = Field(min_length=1)
    job_id: str | None
    deployment_name: str | None
    created_at: Timestamp
    resource_version: int | None = None
    """The store-wide sequence number of the commit that wrote the event (None until then)."""


class EventSpec(_Wire):
    message: str
    flink_job_id: str | None
    details: dict[str, Any] = Field(default_factory=dict)


class Event(_Wire):
    """An Event resource."""

    api_version: str = "v1"
    kind: str = "Event"
    metadata: EventMetadata
    spec: EventSpec

    @property
    def reason(self) -> Reason:
        return self.metadata.name


def job_events(job: Job, changes: Iterable[Change], at: float) -> tuple[Event, ...]:
    """The events of a Job change: ``job`` is the Job after it, ``at`` when it was observed."""
    events = []
    for change in changes:
        if isinstance(change, EpochChanged):
            events.append(
                _job_event(
                    job,
                    Reason.JOBMANAGER_FAILOVER,
                    at,
                    f"a new JobManager took over the job (start-time {change.before}"
                    f" -> {change.after})",
                    {"oldStartTime": change.before, "newStartTime": change.after},
                )
            )
        elif isinstance(change, RestartsIncreased):
            newest = change.causes[-1] if change.causes else None
            because = f": {newest.exception}: {newest.message}" if newest is not None else ""
            events.append(
                _job_event(
                    job,
                    Reason.JOB_RESTARTED,
                    at,
                    f"restarted, count {change.before} -> {change.after}{because}",
                    {
                        "restartsFrom": change.before,
                        "restartsTo": change.after,
                        "rootCauses": [cause.to_dict() for cause in change.causes],
                    },
                )
            )
        elif change.target in _ENTERED:
            events.append(_entered(job, _ENTERED[change.target], at))
    return tuple(events)


def job_created(job: Job, at: float) -> Event:
    """JOB_STARTING: a Job declared or discovered."""
    return _job_event(
        job,
        Reason.JOB_STARTING,
        at,
        f"Job created for Flink job {job.flink_job_id} on target {job.target!r}",
        {"target": job.target},
    )


def target_event(
    reason: Reason,
    *,
    target: str,
    namespace: str,
    deployment_name: str | None,
    at: float,
    error: str | None = None,
) -> Event:
    """TARGET_UNREACHABLE (with ``error``) or TARGET_REACHABLE of one target."""
    if reason is Reason.TARGET_UNREACHABLE:
        message = f"target {target!r} is unreachable: {error}"
    else:
        message = f"target {target!r} is reachable again"
    details: dict[str, Any] = {"target": target}
    if error is not None:
        details["error"] = error
    return Event(
        metadata=EventMetadata(
            id=str(uuid.uuid5(_IDS, f"target/{target}/{reason.value}/{at!r}")),
            name=reason,
            namespace=namespace,
            job_id=None,
            deployment_name=deployment_name,
            created_at=from_epoch(at),
        ),
        spec=EventSpec(message=message, flink_job_id=None, details=details),
    )


def _entered(job: Job, reason: Reason, at: float) -> Event:
    status = job.status
    details: dict[str, Any] = {}
    if status.started is not None:
        details["flinkJobStatus"] = status.started.observed_flink_job_status.value
    if reason is Reason.JOB_FAILED and status.failure is not None:
        details["reason"] = status.failure.reason.value
        details["message"] = status.failure.message
        return _job_event(job, reason, at, f"failed: {status.failure.message}", details)
    return _job_event(job, reason, at, f"Job is {job.state.value}", details)


def _job_event(job: Job, reason: Reason, at: float, message: str, details: dict[str, Any]) -> Event:
    metadata = job.metadata
    return Event(
        metadata=EventMetadata(
            id=str(uuid.uuid5(_IDS, f"{metadata.id}/{metadata.resource_version}/{reason.value}")),
            name=reason,
            namespace=metadata.namespace,
            job_id=metadata.id,
            deployment_name=metadata.deployment_name,
            created_at=from_epoch(at),
        ),
        spec=EventSpec(message=message, flink_job_id=job.flink_job_id, details=details),
    )
