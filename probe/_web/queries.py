"""The query parameters of the Job and event lists, and of their watches, read and checked.

A wrong parameter raises `BadParameter`, whose one-line message the API answers with 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from probe._core.events import Reason
from probe._core.model import InvalidJobId, Job, JobState, canonical_job_id
from probe._store import EventQuery, StoredEvent

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_NUMBER: Final = 10**18 - 1
"""The largest sequence number (or count of seconds) taken: below 2**63, what the stores keep."""
_NUMBER: Final = re.compile(r"[0-9]{1,18}")
_DECIMAL: Final = re.compile(r"[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:(?P<second>[0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class BadParameter(ValueError):
    """A query parameter is wrong; the message (one line) says which and why."""


@dataclass(frozen=True, slots=True)
class JobSelector:
    """Which Jobs a list or a watch of Jobs shows."""

    namespace: str
    deployment_name: str | None = None
    state: JobState | None = None

    def admits(self, job: Job) -> bool:
        metadata = job.metadata
        return self.may_admit(metadata.namespace, metadata.deployment_name) and (
            self.state is None or job.state is self.state
        )

    def may_admit(self, namespace: str, deployment_name: str | None) -> bool:
        """Whether a Job of ``namespace`` and ``deployment_name`` is admitted in some state."""
        return namespace == self.namespace and (
            self.deployment_name is None or deployment_name == self.deployment_name
        )


def job_selector(namespace: str, query: Mapping[str, str]) -> JobSelector:
    """``?deploymentName=`` and ``&state=`` (a Job state)."""
    state = query.get("state")
    if state is not None and state not in JobState.__members__:
        raise BadParameter(f"state: {state!r} is not one of {', '.join(JobState)}")
    return JobSelector(
        namespace,
        query.get("deploymentName"),
        None if state is None else JobState(state),
    )


def event_query(namespace: str, query: Mapping[str, str]) -> EventQuery:
    """``?jobId=`` (dashed or 32 hex digits), ``&deploymentName=``, ``&reason=``, ``&since=``
    (RFC 3339), ``&limit=`` (1 to 1000) and ``&continue=`` (the token of the previous page)."""
    job_id = query.get("jobId")
    reason = query.get("reason")
    if reason is not None and reason not in Reason.__members__:
        raise BadParameter(f"reason: {reason!r} is not one of {', '.join(Reason)}")
    since = query.get("since")
    token = query.get("continue")
    return EventQuery(
        namespace=namespace,
        job_id=None if job_id is None else _job_id(job_id),
        deployment_name=query.get("deploymentName"),
        reason=reason,
        since=None if since is None else _timestamp(since),
        before=None if token is None else _continue_token(token),
        limit=_number("limit", query.get("limit", str(DEFAULT_LIMIT)), 1, MAX_LIMIT),
    )


def admits(query: EventQuery, row: StoredEvent) -> bool:
    """Whether the event ``row`` is one ``query`` selects (its page aside: before, limit)."""
    return (
        row.namespace == query.namespace
        and (query.job_id is None or row.job_id == query.job_id)
        and (query.deployment_name is None or row.deployment_name == query.deployment_name)
        and (query.reason is None or row.reason == query.reason)
        and (query.since is None or row.created_at >= query.since)
    )


@dataclass(frozen=True, slots=True)
class Watch:
    """``?watch=true``: stream the changes after ``start``, for ``timeout`` seconds (None:
    until the client leaves)."""

    start: int
    timeout: float | None


def watch_of(query: Mapping[str, str]) -> Watch | None:
    """``?watch=true&resourceVersion=N&timeoutSeconds=T``, or None for a list.
    ``resourceVersion`` defaults to 0 (everything); both are checked without ``watch`` too,
    and have no effect then."""
    watch = query.get("watch", "false")
    if watch not in ("true", "false"):
        raise BadParameter(f"watch: {watch!r} is neither true nor false")
    version = _number("resourceVersion", query.get("resourceVersion", "0"), 0)
    timeout = query.get("timeoutSeconds")
    seconds = None if timeout is None else _seconds("timeoutSeconds", timeout)
    return None if watch == "false" else Watch(version, seconds)


def continue_token(sequence: int) -> str:
    """The ``continue`` token of the page after the event numbered ``sequence``."""
    return str(sequence)


def _continue_token(token: str) -> int:
    if not _NUMBER.fullmatch(token):
        raise BadParameter(
            f"continue: {token!r} is not a token of this API: ask the first page again"
        )
    return int(token)


def _number(name: str, value: str, least: int, most: int = MAX_NUMBER) -> int:
    if not _NUMBER.fullmatch(value) or not least <= int(value) <= most:
        raise BadParameter(f"{name}: {value!r} is not an integer from {least} to {most}")
    return int(value)


def _seconds(name: str, value: str) -> float:
    seconds = float(value) if _DECIMAL.fullmatch(value) else 0.0
    if not 0 < seconds <= MAX_NUMBER:
        raise BadParameter(
            f"{name}: {value!r} is not a number of seconds above 0, up to {MAX_NUMBER}"
        )
    return seconds


def _job_id(value: str) -> str:
    try:
        return canonical_job_id(value)
    except InvalidJobId as error:
        raise BadParameter(f"jobId: {error}") from None


def _timestamp(value: str) -> float:
    """An RFC 3339 date-time with its offset, as seconds since the Unix epoch."""
    problem = BadParameter(
        f"since: {value!r} is not an RFC 3339 date-time, such as 2025-06-01T12:00:00Z"
    )
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise problem
    leap = match["second"] == "60"  # RFC 3339's leap second, which datetime has not
    text = value[: match.start("second")] + "59" + value[match.end("second") :] if leap else value
    try:
        return datetime.fromisoformat(text.upper()).timestamp() + leap
    except ValueError:  # a month 13, a 25th hour
        raise problem from None
