"""The OpenAPI document (`GET /api/openapi.json`): valid, and true of a live daemon.

schemathesis generates requests for every operation of the document (path parameters of every
kind, positive and negative) against a daemon running as `flink-probe run` on a fake Flink
cluster whose Jobs are in every state; each answer must be no 5xx and conform to the document:
status code, content type, headers, body schema.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
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

from probe._core.model import Job
from probe._web.openapi import JOB_PATH, JOBS_PATH, OPENAPI_PATH, WRITE_METHODS, openapi_document
from probe.testing import FakeCluster, serve_in_thread

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
    return document


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    validate(copy.deepcopy(document))
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    assert set(paths) == {"/", "/metrics", "/healthz", "/readyz", OPENAPI_PATH, JOBS_PATH, JOB_PATH}
    for path in (JOBS_PATH, JOB_PATH):
        assert {"get", "post", "put", "patch", "delete"} <= set(paths[path])
        for method in ("post", "put", "patch", "delete"):
            assert set(paths[path][method]["responses"]) == {"401", "405"}


def test_the_job_schema_is_the_models() -> None:
    """Generated from the pydantic model: same fields, every one of them required (the API
    sends every field, null where absent)."""
    schemas = openapi_document()["components"]["schemas"]
    wire_fields = {field.alias or name for name, field in Job.model_fields.items()}
    assert set(schemas["Job"]["properties"]) == wire_fields
    assert set(schemas["Job"]["required"]) == wire_fields
    assert schemas["Job"]["additionalProperties"] is False
    for name in ("Metadata", "Status", "Started", "Failure", "FlinkJobStatus", "JobState"):
        assert name in schemas, name
    created_at = schemas["Metadata"]["properties"]["createdAt"]
    assert (created_at["type"], created_at["format"]) == ("string", "date-time")


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


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_answer_conforms_to_the_document(case: Case[Any], live_daemon: ProbeClient) -> None:
    # The write methods are documented for their only answer, 405: that a valid request is
    # refused is their point, not a failure.
    refused_by_design = case.method.lower() in WRITE_METHODS
    case.call_and_validate(
        base_url=live_daemon.base_url,
        excluded_checks=[positive_data_acceptance] if refused_by_design else [],
    )


def test_live_jobs_match_the_schema(live_daemon: ProbeClient) -> None:
    """Every Job the daemon serves, in every state, validates against the Job schema."""
    document = openapi_document()
    job_list = {"$ref": "#/components/schemas/JobList", "components": document["components"]}
    for namespace in ("default", "team-a"):
        status, body = live_daemon.get_json(f"/api/v1/namespaces/{namespace}/jobs")
        assert status == 200
        jsonschema_rs.validate(job_list, body)
