"""The Job resource's JSON: shape, timestamps, ids, round trips."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from simulation import budget

from probe._core.model import (
    FailureReason,
    FlinkJobStatus,
    InvalidJobId,
    Job,
    JobState,
    canonical_job_id,
    is_jid,
    job_id_from_jid,
    new_job,
)

JOB_ID = "3f1da3c8-6f22-430f-9200-eda014ea5319"
JID = "3f1da3c86f22430f9200eda014ea5319"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

# What the API serves for a STARTED Job (the shape of the README's example).
STARTED_EXAMPLE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Job",
    "metadata": {
        "id": JOB_ID,
        "namespace": "default",
        "deploymentName": "orders",
        "createdAt": "2026-11-28T16:00:00.000Z",
        "modifiedAt": "2026-11-28T16:05:10.250Z",
        "terminatedAt": None,
        "resourceVersion": 7,
        "annotations": {"flink-probe/target": "prod"},
    },
    "spec": {"target": "prod", "parallelism": 2},
    "status": {
        "state": "STARTED",
        "failure": None,
        "started": {
            "flinkJobId": JID,
            "transitionTime": "2026-11-28T16:00:20.000Z",
            "lastUpdateTime": "2026-11-28T16:05:10.250Z",
            "observedFlinkJobRestarts": 3,
            "observedFlinkJobStatus": "RUNNING",
        },
    },
}


def failed_example() -> dict[str, Any]:
    wire = copy.deepcopy(STARTED_EXAMPLE)
    wire["metadata"]["terminatedAt"] = "2026-11-28T16:06:00.000Z"
    wire["status"]["state"] = "FAILED"
    wire["status"]["failure"] = {
        "reason": "FlinkJobFailed",
        "message": "java.lang.RuntimeException: boom",
        "failedAt": "2026-11-28T16:06:00.000Z",
    }
    wire["status"]["started"]["observedFlinkJobStatus"] = "FAILED"
    return wire


def keys(value: Any, path: str = "") -> set[str]:
    """Every key path of the JSON document (spec and annotations are opaque maps)."""
    if not isinstance(value, dict) or path.endswith((".spec", ".annotations")):
        return set()
    found = set()
    for key, child in value.items():
        found.add(f"{path}.{key}")
        found |= keys(child, f"{path}.{key}")
    return found


FAILURE_KEYS = {".status.failure.reason", ".status.failure.message", ".status.failure.failedAt"}


@pytest.mark.parametrize(
    ("wire", "extra_keys"),
    [(STARTED_EXAMPLE, set()), (failed_example(), FAILURE_KEYS)],
    ids=["started", "failed"],
)
def test_job_json_matches_the_design_shape_field_by_field(
    wire: dict[str, Any], extra_keys: set[str]
) -> None:
    served = Job.model_validate(wire).to_wire()
    assert served == wire
    assert keys(served) == keys(STARTED_EXAMPLE) | extra_keys


def timestamps(value: Any) -> list[Any]:
    if not isinstance(value, dict):
        return []
    found = [v for k, v in value.items() if k.endswith(("At", "Time"))]
    return found + [t for child in value.values() for t in timestamps(child)]


def test_every_timestamp_is_rfc3339_utc() -> None:
    served = timestamps(Job.model_validate(failed_example()).to_wire())
    assert len(served) == 6
    assert all(RFC3339_UTC.match(t) for t in served), served


def test_wire_keys_are_camel_case() -> None:
    for path in keys(failed_example()):
        assert "_" not in path, path


def test_absent_values_are_null_not_missing() -> None:
    wire = Job.model_validate(STARTED_EXAMPLE).to_wire()
    assert wire["metadata"]["terminatedAt"] is None
    assert wire["status"]["failure"] is None


def test_python_side_names_are_snake_case() -> None:
    job = Job.model_validate(failed_example())
    assert job.status.failure is not None
    assert job.status.failure.reason is FailureReason.FLINK_JOB_FAILED
    assert job.status.started is not None
    assert job.status.started.observed_flink_job_status is FlinkJobStatus.FAILED
    assert job.state is JobState.FAILED


def test_new_job_is_starting_without_started_status() -> None:
    now = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
    job = new_job(
        job_id=JOB_ID.upper(),
        namespace="default",
        deployment_name="orders",
        target="prod",
        spec={"parallelism": 2},
        now=now,
    )
    wire = job.to_wire()
    assert wire["metadata"]["id"] == JOB_ID
    assert wire["metadata"]["resourceVersion"] == 1
    assert wire["metadata"]["createdAt"] == wire["metadata"]["modifiedAt"]
    assert wire["metadata"]["createdAt"] == "2026-11-28T16:00:00.000Z"
    assert wire["metadata"]["annotations"]["flink-probe/target"] == "prod"
    assert wire["status"]["state"] == "STARTING"
    assert wire["status"].get("started") is None
    assert job.target == "prod"


@pytest.mark.parametrize(
    ("given_time", "served"),
    [
        ("2026-11-28T17:00:00+01:00", "2026-11-28T16:00:00.000Z"),
        ("2026-11-28T16:00:00Z", "2026-11-28T16:00:00.000Z"),
        ("2026-11-28T16:00:00.5Z", "2026-11-28T16:00:00.500Z"),
        (datetime(2026, 11, 28, 16, 0), "2026-11-28T16:00:00.000Z"),  # naive: taken as UTC
        (
            datetime(2026, 11, 28, 11, 0, tzinfo=timezone(timedelta(hours=-5))),
            "2026-11-28T16:00:00.000Z",
        ),
    ],
)
def test_timestamps_are_served_as_rfc3339_utc(given_time: str | datetime, served: str) -> None:
    wire = copy.deepcopy(STARTED_EXAMPLE)
    job = Job.model_validate({**wire, "metadata": {**wire["metadata"], "createdAt": given_time}})
    assert job.to_wire()["metadata"]["createdAt"] == served
    assert job.metadata.created_at.tzinfo is UTC


_aware_times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)


@budget(ci=300, deep=10_000)
@given(_aware_times, st.integers(0, 10_000), st.text(max_size=30))
def test_job_json_round_trips(at: datetime, restarts: int, message: str) -> None:
    wire = failed_example()
    wire["metadata"]["modifiedAt"] = at.isoformat()
    wire["status"]["started"]["observedFlinkJobRestarts"] = restarts
    wire["status"]["failure"]["message"] = message
    served = Job.model_validate(wire).to_wire()
    assert RFC3339_UTC.match(served["metadata"]["modifiedAt"])
    again = Job.model_validate(json.loads(json.dumps(served)))
    assert again.to_wire() == served
    assert again.metadata.modified_at == at.replace(microsecond=at.microsecond // 1000 * 1000)


def test_job_with_sub_millisecond_times_round_trips_exactly() -> None:
    job = new_job(
        job_id=JOB_ID,
        namespace="default",
        deployment_name="orders",
        target="prod",
        spec={},
        now=datetime(2026, 11, 28, 16, 0, 0, 123456, tzinfo=UTC),
    )
    assert Job.model_validate(job.to_wire()) == job


def test_unknown_fields_are_refused() -> None:
    wire = copy.deepcopy(STARTED_EXAMPLE)
    wire["status"]["started"]["numRestarts"] = 3
    with pytest.raises(ValidationError, match="numRestarts"):
        Job.model_validate(wire)


# -- ids ----------------------------------------------------------------------------------------
def test_flink_job_id_is_the_job_id_without_dashes() -> None:
    assert Job.model_validate(STARTED_EXAMPLE).flink_job_id == JID


def test_discovered_job_id_is_the_jid_as_a_dashed_uuid() -> None:
    assert job_id_from_jid(JID) == JOB_ID
    assert job_id_from_jid(JID.upper()) == JOB_ID


@budget(ci=200, deep=5_000)
@given(st.uuids())
def test_ids_convert_both_ways(value: Any) -> None:
    job_id = str(value)
    assert canonical_job_id(job_id) == job_id
    assert canonical_job_id(job_id.upper()) == job_id
    assert job_id_from_jid(value.hex) == job_id
    assert is_jid(value.hex)
    assert not is_jid(job_id)


@pytest.mark.parametrize(
    "bad",
    [
        "orders",
        "",
        "3f1da3c8-6f22-430f-9200-eda014ea531",  # one digit short
        "3f1da3c8-6f22-430f-9200-eda014ea5319a",
        "3f1da3c8-6f22-430f-9200-eda014ea531g",
        "{3f1da3c8-6f22-430f-9200-eda014ea5319}",
        "urn:uuid:3f1da3c8-6f22-430f-9200-eda014ea5319",
        " 3f1da3c8-6f22-430f-9200-eda014ea5319",
    ],
)
def test_non_uuid_job_ids_are_rejected_naming_the_value(bad: str) -> None:
    with pytest.raises(InvalidJobId, match=re.escape(repr(bad))):
        canonical_job_id(bad)
    wire = copy.deepcopy(STARTED_EXAMPLE)
    wire["metadata"]["id"] = bad
    with pytest.raises(ValidationError, match="UUID"):
        Job.model_validate(wire)


def test_non_uuid_job_id_message_says_what_is_expected() -> None:
    with pytest.raises(InvalidJobId, match=r"'orders' is not a UUID \(expected e\.g\. "):
        canonical_job_id("orders")


@pytest.mark.parametrize(
    "bad", ["", JID[:-1], JID + "0", JOB_ID, "zz" + JID[2:], "{" + JID[:30] + "}"]
)
def test_malformed_jids_are_rejected_naming_the_value(bad: str) -> None:
    with pytest.raises(InvalidJobId, match=re.escape(repr(bad))):
        job_id_from_jid(bad)
