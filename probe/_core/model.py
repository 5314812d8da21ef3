"""The Job resource, in the shape of Ververica Platform's Job API.

Field names are snake_case in Python and camelCase on the wire; timestamps are timezone-aware
UTC datetimes that serialise as RFC 3339 with a ``Z`` suffix; absent values are ``null``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
)
from pydantic.alias_generators import to_camel


class JobState(StrEnum):
    """`status.state` of a Job resource."""

    STARTING = "STARTING"
    STARTED = "STARTED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    FAILED = "FAILED"
    FINISHED = "FINISHED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES: Final = frozenset({JobState.TERMINATED, JobState.FAILED, JobState.FINISHED})


class FlinkJobStatus(StrEnum):
    """Flink's JobStatus, plus ``UNKNOWN`` for a probe that could not learn it."""

    INITIALIZING = "INITIALIZING"
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    FAILING = "FAILING"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELED = "CANCELED"
    FINISHED = "FINISHED"
    RESTARTING = "RESTARTING"
    SUSPENDED = "SUSPENDED"
    RECONCILING = "RECONCILING"
    UNKNOWN = "UNKNOWN"

    @property
    def is_globally_terminal(self) -> bool:
        """FAILED, CANCELED, FINISHED: no JobManager will ever run this job again."""
        return self in GLOBALLY_TERMINAL


GLOBALLY_TERMINAL: Final = frozenset(
    {FlinkJobStatus.FAILED, FlinkJobStatus.CANCELED, FlinkJobStatus.FINISHED}
)


class FailureReason(StrEnum):
    FLINK_JOB_FAILED = "FlinkJobFailed"
    FLINK_JOB_NOT_FOUND = "FlinkJobNotFound"
    START_TIMEOUT = "StartTimeout"


TARGET_ANNOTATION: Final = "flink-probe/target"
SOURCE_ANNOTATION: Final = "flink-probe/source"
"""Where the Job came from: ``config`` (the ``jobs:`` list) or ``discovery``."""
SOURCE_CONFIG: Final = "config"
SOURCE_DISCOVERY: Final = "discovery"


class InvalidJobId(ValueError):
    """An id that is not a UUID (Job ids) or not 32 hex digits (Flink job ids)."""


def canonical_job_id(value: str) -> str:
    """A Job id as a lower-case dashed UUID; raises InvalidJobId for anything else."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidJobId(
            f"job id {value!r} is not a UUID (expected e.g. 3f1da3c8-6f22-430f-9200-eda014ea5319)"
        ) from None
    text = str(parsed)
    if value.lower() not in (text, parsed.hex):
        # uuid.UUID also accepts braces and "urn:uuid:" prefixes; the API does not.
        raise InvalidJobId(f"job id {value!r} is not a plain UUID")
    return text


JID_PATTERN: Final = "[0-9a-f]{32}"
"""A Flink job id (jid): 32 lower-case hex digits."""
_JID: Final = re.compile(JID_PATTERN)


def is_jid(value: str) -> bool:
    """Whether ``value`` is a Flink job id as Flink writes it."""
    return _JID.fullmatch(value) is not None


def job_id_from_jid(jid: str) -> str:
    """The Job id of a discovered Flink job: its 32-hex-digit jid written as a dashed UUID."""
    if len(jid) != 32:
        raise InvalidJobId(f"Flink job id {jid!r} is not 32 hex digits")
    return canonical_job_id(jid)


def utc(value: datetime) -> datetime:
    """Normalise to an aware UTC datetime in whole milliseconds (naive values are taken as
    UTC): the wire carries milliseconds, so a Job read back equals the Job written."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def format_rfc3339(value: datetime) -> str:
    text = utc(value).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def from_epoch(seconds: float) -> datetime:
    value = datetime.fromtimestamp(seconds, UTC)  # already aware UTC: only the ms cut of `utc`
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


Timestamp = Annotated[
    datetime,
    AfterValidator(utc),
    PlainSerializer(format_rfc3339, return_type=str, when_used="json"),
]
JobId = Annotated[str, AfterValidator(canonical_job_id)]


_FIELD_NAMES: Final[dict[frozenset[str], set[str]]] = {}


class _Wire(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def model_post_init(self, context: Any, /) -> None:
        # Thousands of Jobs have a few shapes: one set of field names per shape, not one each
        # (a frozen model never changes its set; a copy gets a set of its own).
        names = self.__pydantic_fields_set__
        shared = _FIELD_NAMES.setdefault(frozenset(names), names)
        object.__setattr__(self, "__pydantic_fields_set__", shared)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class Metadata(_Wire):
    id: JobId
    namespace: str = Field(min_length=1)
    deployment_name: str
    created_at: Timestamp
    modified_at: Timestamp
    terminated_at: Timestamp | None = None
    resource_version: int = Field(ge=1)
    annotations: dict[str, str] = Field(default_factory=dict)


class Failure(_Wire):
    reason: FailureReason
    message: str
    failed_at: Timestamp


class Started(_Wire):
    flink_job_id: str
    transition_time: Timestamp
    last_update_time: Timestamp
    observed_flink_job_restarts: int = Field(ge=0)
    observed_flink_job_status: FlinkJobStatus


class Status(_Wire):
    state: JobState
    failure: Failure | None = None
    started: Started | None = None


class Job(_Wire):
    """A Job resource. `spec` is opaque to the daemon and never changes after creation."""

    api_version: str = "v1"
    kind: str = "Job"
    metadata: Metadata
    spec: dict[str, Any] = Field(default_factory=dict)
    status: Status

    @property
    def id(self) -> str:
        return self.metadata.id

    @property
    def state(self) -> JobState:
        return self.status.state

    @property
    def flink_job_id(self) -> str:
        return self.metadata.id.replace("-", "")  # the id is validated canonical

    @property
    def target(self) -> str:
        return self.metadata.annotations.get(TARGET_ANNOTATION, "")

    @property
    def discovered(self) -> bool:
        return self.metadata.annotations.get(SOURCE_ANNOTATION) == SOURCE_DISCOVERY


def new_job(
    *,
    job_id: str,
    namespace: str,
    deployment_name: str,
    target: str,
    spec: dict[str, Any],
    now: datetime,
    source: str = SOURCE_CONFIG,
) -> Job:
    """A freshly declared Job: STARTING, resourceVersion 1."""
    return Job(
        metadata=Metadata(
            id=job_id,
            namespace=namespace,
            deployment_name=deployment_name,
            created_at=now,
            modified_at=now,
            resource_version=1,
            annotations={TARGET_ANNOTATION: target, SOURCE_ANNOTATION: source},
        ),
        spec=spec,
        status=Status(state=JobState.STARTING),
    )


_M = TypeVar("_M", bound=BaseModel)


def replace_model(model: _M, **changes: Any) -> _M:
    """A copy of a frozen model with some fields changed (values are already valid).

    What ``model_copy(update=...)`` does, without its generic copying (a probe may copy
    several models of every Job)."""
    copied = model.__class__.__new__(model.__class__)
    values = model.__dict__.copy()
    values.update(changes)
    object.__setattr__(copied, "__dict__", values)
    fields_set = model.__pydantic_fields_set__
    if not changes.keys() <= fields_set:
        fields_set = fields_set | changes.keys()  # a frozen model never changes its own set
    object.__setattr__(copied, "__pydantic_fields_set__", fields_set)
    object.__setattr__(copied, "__pydantic_extra__", model.__pydantic_extra__)
    object.__setattr__(copied, "__pydantic_private__", model.__pydantic_private__)
    return copied
