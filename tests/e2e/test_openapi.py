"""The OpenAPI document (`GET /api/openapi.json`): valid, and true of a live daemon.

schemathesis generates requests for every operation of the document (path parameters of every
kind, positive and negative) against a daemon running as `flink-probe run` on a fake Flink
cluster whose Jobs are in every state; each answer must be no 5xx and conform to the document:
status code, content type, headers, body schema. Watches (`?watch=true`) are cut short with
`timeoutSeconds`, and their lines are checked against the document's line schemas.
"""

from __future__ import annotations

import copy
import json
import operator
import re
import uuid
from collections.abc import Iterator
from functools import reduce
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from daemon_harness import (
    DaemonProcess,
    ProbeClient,
    daemon_config,
    dashed,
    state_of,
    static_job,
    target,
    wait_for_sync,
)
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation.case import Case

from probe._web.openapi import OPENAPI_PATH, PROBE_PATH, WRITE_METHODS, openapi_document
from probe.testing import FakeCluster, serve_in_thread

REPO = Path(__file__).resolve().parents[2]
JOBS = "/api/v1/namespaces/{namespace}/jobs"
EVENTS = "/api/v1/namespaces/{namespace}/events"
JIDS = {
    "orders": "3f1da3c86f22430f9200eda014ea5319",
    "nightly": "0f0e0d0c0b0a09080706050403020100",
    "broken": "deadbeefdeadbeefdeadbeefdeadbeef",
    "canceled": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
    "cancelling": "b1b2c3d4e5f60718293a4b5c6d7e8f91",
}
"""Flink job ids of the fake cluster's jobs (fixed, so they can be examples in the schema)."""
NEVER_SEEN = "c0ffee00-0000-4000-8000-000000000001"
"""A declared Job that Flink never runs: it stays STARTING."""
EXPECTED_STATES = {
    dashed(JIDS["orders"]): "STARTED",
    dashed(JIDS["nightly"]): "FINISHED",
    dashed(JIDS["broken"]): "FAILED",
    dashed(JIDS["canceled"]): "TERMINATED",
    dashed(JIDS["cancelling"]): "TERMINATING",
    NEVER_SEEN: "STARTING",
}


def with_examples(document: dict[str, Any]) -> dict[str, Any]:
    """The document, with the live daemon's namespaces and Job ids as parameter examples (so
    that generated requests also reach real Jobs, not only 404s)."""
    document = copy.deepcopy(document)
    parameters = document["components"]["parameters"]
    parameters["namespace"]["examples"] = {
        name: {"value": name} for name in ("default", "team-a", "nowhere")
    }
    ids = [*EXPECTED_STATES, JIDS["orders"], str(uuid.UUID(int=0))]
    parameters["jobId"]["examples"] = {f"job{i}": {"value": v} for i, v in enumerate(ids)}
    parameters["eventJobId"]["examples"] = parameters["jobId"]["examples"]
    parameters["deploymentName"]["examples"] = {name: {"value": name} for name in JIDS}
    return document


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    validate(copy.deepcopy(document))
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/",
        "/metrics",
        "/probe",
        "/healthz",
        "/readyz",
        "/api/openapi.json",
        "/api/v1/namespaces/{namespace}/jobs",
        "/api/v1/namespaces/{namespace}/jobs/{jobId}",
        "/api/v1/namespaces/{namespace}/events",
    }


def answer_schema(
    path: str, method: str, status: str, content_type: str = "application/json"
) -> dict[str, Any]:
    """The JSON schema of an answer, its reference followed."""
    document = openapi_document()
    answer = document["paths"][path][method]["responses"][status]
    if "$ref" in answer:
        answer = document["components"]["responses"][answer["$ref"].rpartition("/")[2]]
    return followed(answer["content"][content_type]["schema"])


def followed(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` itself, or the component its `$ref` names (also as the non-null branch of an
    optional field's `anyOf`)."""
    schemas = openapi_document()["components"]["schemas"]
    branches = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    [schema] = branches
    while "$ref" in schema:
        schema = schemas[schema["$ref"].removeprefix("#/components/schemas/")]
    return schema


def fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An object's fields, each followed; the API sends every field, so each is required."""
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])
    return {name: followed(field) for name, field in schema["properties"].items()}


def test_the_job_list_is_documented_field_by_field() -> None:
    """What a client of `GET .../jobs` relies on, written out (not derived from the model)."""
    job_list = fields(answer_schema("/api/v1/namespaces/{namespace}/jobs", "get", "200"))
    assert job_list["kind"] == {"const": "JobList"}
    assert fields(job_list["metadata"])["resourceVersion"]["type"] == "integer"
    assert job_list["items"]["type"] == "array"
    job = fields(followed(job_list["items"]["items"]))
    assert job == fields(answer_schema("/api/v1/namespaces/{namespace}/jobs/{jobId}", "get", "200"))
    assert set(job) == {"apiVersion", "kind", "metadata", "spec", "status"}

    metadata = fields(job["metadata"])
    assert set(metadata) == {
        "id",
        "namespace",
        "deploymentName",
        "createdAt",
        "modifiedAt",
        "terminatedAt",
        "resourceVersion",
        "annotations",
    }
    for time_field in ("createdAt", "modifiedAt", "terminatedAt"):
        assert (metadata[time_field]["type"], metadata[time_field]["format"]) == (
            "string",
            "date-time",
        )
    assert metadata["resourceVersion"]["type"] == "integer"

    status = fields(job["status"])
    assert set(status) == {"state", "failure", "started"}
    assert set(status["state"]["enum"]) == {
        "STARTING",
        "STARTED",
        "TERMINATING",
        "TERMINATED",
        "FAILED",
        "FINISHED",
    }
    assert set(fields(status["failure"])) == {"reason", "message", "failedAt"}
    started = fields(status["started"])
    assert set(started) == {
        "flinkJobId",
        "transitionTime",
        "lastUpdateTime",
        "observedFlinkJobRestarts",
        "observedFlinkJobStatus",
    }
    restarts = started["observedFlinkJobRestarts"]
    assert (restarts["type"], restarts["minimum"]) == ("integer", 0)
    assert {"RUNNING", "RESTARTING", "CANCELED", "UNKNOWN"} <= set(
        started["observedFlinkJobStatus"]["enum"]
    )


def test_the_event_list_is_documented_field_by_field() -> None:
    event_list = fields(answer_schema(EVENTS, "get", "200"))
    assert (event_list["apiVersion"], event_list["kind"]) == (
        {"const": "v1"},
        {"const": "EventList"},
    )
    list_metadata = fields(event_list["metadata"])
    assert list_metadata["resourceVersion"]["type"] == "integer"
    assert list_metadata["continue"]["type"] == ["string", "null"]
    event = fields(followed(event_list["items"]["items"]))
    assert set(event) == {"apiVersion", "kind", "metadata", "spec"}
    metadata = fields(event["metadata"])
    assert set(metadata) == {
        "id",
        "name",
        "namespace",
        "jobId",
        "deploymentName",
        "createdAt",
        "resourceVersion",
    }
    assert set(metadata["name"]["enum"]) == {
        "JOB_STARTING",
        "JOB_STARTED",
        "JOB_RESTARTED",
        "JOBMANAGER_FAILOVER",
        "JOB_TERMINATING",
        "JOB_TERMINATED",
        "JOB_FINISHED",
        "JOB_FAILED",
        "TARGET_UNREACHABLE",
        "TARGET_REACHABLE",
    }
    assert (metadata["createdAt"]["type"], metadata["createdAt"]["format"]) == (
        "string",
        "date-time",
    )
    assert metadata["resourceVersion"]["type"] == "integer"
    assert set(fields(event["spec"])) == {"message", "flinkJobId", "details"}


def test_the_watches_are_documented() -> None:
    """Both lists take the watch parameters and answer newline-delimited JSON lines, whose
    types are Kubernetes' watch event types."""
    paths = openapi_document()["paths"]
    for path, kind, types in (
        (JOBS, "Job", {"ADDED", "MODIFIED"}),
        (EVENTS, "Event", {"ADDED"}),
    ):
        names = {ref["$ref"].rpartition("/")[2] for ref in paths[path]["get"]["parameters"]}
        assert {"watch", "resourceVersion", "timeoutSeconds"} <= names
        assert {"400", "429", "503"} <= set(paths[path]["get"]["responses"])
        line = answer_schema(path, "get", "200", "application/x-ndjson")
        change, bookmark = (followed(branch) for branch in line["oneOf"])
        assert set(change["properties"]["type"]["enum"]) == types
        assert followed(change["properties"]["object"])["properties"]["kind"]["default"] == kind
        assert bookmark["properties"]["type"] == {"const": "BOOKMARK"}


def test_writes_to_the_jobs_are_documented_as_refused() -> None:
    paths = openapi_document()["paths"]
    for path in (
        "/api/v1/namespaces/{namespace}/jobs",
        "/api/v1/namespaces/{namespace}/jobs/{jobId}",
    ):
        assert {"get", "post", "put", "patch", "delete"} <= set(paths[path])
        for method in ("post", "put", "patch", "delete"):
            assert set(paths[path][method]["responses"]) == {"401", "405"}
        error = answer_schema(path, "delete", "405")
        assert set(fields(followed(error["properties"]["error"]))) == {"code", "message"}


README_JOB = json.loads(
    re.search(r"```json\n(.*?)```", (REPO / "README.md").read_text(), re.S)[1]  # type: ignore[index]
)
"""The README's example Job, as a client would expect one."""


def with_change(job: dict[str, Any], *path: str, value: object) -> dict[str, Any]:
    changed = copy.deepcopy(job)
    *parents, last = path
    reduce(operator.getitem, parents, changed)[last] = value
    return changed


def without(job: dict[str, Any], *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(job)
    *parents, last = path
    del reduce(operator.getitem, parents, changed)[last]
    return changed


def test_the_readmes_job_is_valid_and_mistakes_are_not() -> None:
    job_list = {
        "$ref": "#/components/schemas/JobList",
        "components": openapi_document()["components"],
    }
    listed = {"kind": "JobList", "metadata": {"resourceVersion": 7}}
    jsonschema_rs.validate(job_list, {**listed, "items": [README_JOB]})
    started = ("status", "started")
    for wrong in (
        with_change(README_JOB, *started, "observedFlinkJobRestarts", value="3"),
        with_change(README_JOB, *started, "observedFlinkJobRestarts", value=-1),
        with_change(README_JOB, *started, "observedFlinkJobStatus", value="BROKEN"),
        with_change(README_JOB, "status", "state", value="RUNNING"),
        with_change(README_JOB, "metadata", "createdAt", value=1700000000),
        with_change(README_JOB, "metadata", "owner", value="someone"),
        without(README_JOB, "status", "started"),
        without(README_JOB, "metadata", "terminatedAt"),
    ):
        assert not jsonschema_rs.is_valid(job_list, {**listed, "items": [wrong]}), wrong


@pytest.fixture(scope="module")
def live_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProbeClient]:
    """A daemon with Jobs in every state, in two namespaces."""
    directory = tmp_path_factory.mktemp("openapi")
    cluster = FakeCluster()
    for name, jid in JIDS.items():
        cluster.submit(name, jid)
    cluster.restart(JIDS["orders"], n=2)
    cluster.finish(JIDS["nightly"])
    cluster.fail(JIDS["broken"], "the input topic does not exist")
    cluster.cancel(JIDS["canceled"])
    cluster.cancel(JIDS["cancelling"], slow=True)
    with serve_in_thread(cluster) as fake:
        config = daemon_config(
            directory / "state.db",
            [target("prod", fake.url), target("other", fake.url, namespace="team-a")],
            [static_job(NEVER_SEEN, "prod", "never-submitted")],
        )
        with DaemonProcess(config, directory / "daemon.yaml") as daemon:
            daemon.wait_healthy()
            wait_for_sync(
                lambda: {job["metadata"]["id"]: state_of(job) for job in daemon.client.jobs()},
                lambda states: states == EXPECTED_STATES,
                "a Job in every state",
            )
            yield daemon.client
            assert daemon.terminate() == 0, daemon.stderr


def test_the_daemon_serves_the_document(live_daemon: ProbeClient) -> None:
    status, document = live_daemon.get_json(OPENAPI_PATH)
    assert (status, document) == (200, openapi_document())


schema = schemathesis.openapi.from_dict(with_examples(openapi_document()))


def watches_forever(query: dict[str, Any]) -> bool:
    """Whether the daemon would stream this list's changes until the client leaves."""
    timeout = query.get("timeoutSeconds", 1)
    try:
        seconds = -1.0 if isinstance(timeout, bool) else float(timeout)
    except (TypeError, ValueError):
        seconds = -1.0
    return str(query.get("watch")).lower() == "true" and 0 < seconds <= 10**18


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_answer_conforms_to_the_document(case: Case[Any], live_daemon: ProbeClient) -> None:
    # The write methods are documented for their only answer, 405: that a valid request is
    # refused is their point, not a failure. So is a /probe of a URL flink-probe does not take
    # (400: not an http(s) URL, an unknown profile), which no schema of a string can tell.
    refused_by_design = case.method.lower() in WRITE_METHODS or case.path == PROBE_PATH
    if watches_forever(case.query or {}):
        # A watch answers until the client leaves: this one ends at once (a valid timeout
        # for a valid one: the case stays what it was generated as).
        case.query = {**(case.query or {}), "timeoutSeconds": 0.01}
    case.call_and_validate(
        base_url=live_daemon.base_url,
        excluded_checks=[positive_data_acceptance] if refused_by_design else [],
    )


def schema_of(name: str) -> dict[str, Any]:
    """A component schema, with the components its references name."""
    return {"$ref": f"#/components/schemas/{name}", "components": openapi_document()["components"]}


def test_live_jobs_match_the_schema(live_daemon: ProbeClient) -> None:
    """Every Job the daemon serves, in every state, validates against the Job schema."""
    for namespace in ("default", "team-a"):
        status, body = live_daemon.get_json(f"/api/v1/namespaces/{namespace}/jobs")
        assert status == 200
        jsonschema_rs.validate(schema_of("JobList"), body)


def test_live_events_and_watch_lines_match_the_schema(live_daemon: ProbeClient) -> None:
    """The events of Jobs in every state, and every line of both watches from 0 (a second
    long), validate against their schemas."""
    status, body = live_daemon.get_json("/api/v1/namespaces/default/events?limit=1000")
    assert status == 200
    jsonschema_rs.validate(schema_of("EventList"), body)
    reasons = {event["metadata"]["name"] for event in body["items"]}
    assert {"JOB_STARTING", "JOB_STARTED", "JOB_FINISHED", "JOB_FAILED"} <= reasons
    for path, line_schema, kind in (
        ("jobs", "JobWatchEvent", "Job"),
        ("events", "EventWatchEvent", "Event"),
    ):
        answer = live_daemon.request(
            f"/api/v1/namespaces/default/{path}?watch=true&resourceVersion=0&timeoutSeconds=1"
        )
        assert (answer.status, answer.content_type) == (200, "application/x-ndjson")
        lines = [json.loads(line) for line in answer.text.splitlines()]
        assert {line["object"]["kind"] for line in lines} == {kind}
        for line in lines:
            jsonschema_rs.validate(schema_of(line_schema), line)
