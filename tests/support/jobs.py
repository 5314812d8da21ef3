"""One Job and observations of it, as the unit tests of the core, book and store build them."""

from __future__ import annotations

from simulation import BASE

from probe._core.fold import FoldSettings, Observation, Presence, fold
from probe._core.model import FlinkJobStatus, from_epoch, new_job
from probe._core.record import JobRecord
from probe._core.restarts import Lags

JOB_ID = "3f1da3c8-6f22-430f-9200-eda014ea5319"
JID = "3f1da3c86f22430f9200eda014ea5319"
EPOCH = 1_699_999_990_000  # the Flink job's start-time (ms), before the Job's creation
LAGS = Lags(overview_max_age=3.0, metrics_max_age=20.0)
SETTINGS = FoldSettings(not_found_grace=3, start_timeout=600.0, lags=LAGS)


def starting(created: float = BASE) -> JobRecord:
    """The Job ``orders`` of target ``prod``, declared at ``created`` and not seen yet."""
    job = new_job(
        job_id=JOB_ID,
        namespace="default",
        deployment_name="orders",
        target="prod",
        spec={},
        now=from_epoch(created),
    )
    return JobRecord(job=job)


def job_of(target: str, index: int, version: int = 1) -> JobRecord:
    """A STARTING Job of ``target`` (its id made of ``index``), at ``resource_version``."""
    job = new_job(
        job_id=f"3f1da3c8-6f22-430f-9200-{index:012x}",
        namespace="default",
        deployment_name=f"job-{index}",
        target=target,
        spec={},
        now=from_epoch(BASE),
    )
    metadata = job.metadata.model_copy(update={"resource_version": version})
    return JobRecord(job.model_copy(update={"metadata": metadata}), last_probe_at=BASE)


def found(
    at: float,
    status: FlinkJobStatus = FlinkJobStatus.RUNNING,
    *,
    raw: int | None = None,
    message: str | None = None,
    start_time: int = EPOCH,
) -> Observation:
    """The job seen in the overview at ``at``, with a numRestarts ``raw`` if one was read."""
    return Observation(
        at=at,
        presence=Presence.FOUND,
        status=status,
        start_time=start_time,
        num_restarts=raw,
        num_restarts_max_age=LAGS.metrics_max_age,
        failure_message=message,
    )


def absent(at: float, presence: Presence) -> Observation:
    return Observation(at=at, presence=presence)


def folded(record: JobRecord, *observations: Observation) -> JobRecord:
    """``record`` after folding ``observations`` in order."""
    for observation in observations:
        record = fold(record, observation, SETTINGS).record
    return record
