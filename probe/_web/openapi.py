"""The OpenAPI 3.1 description of the daemon's HTTP API, served at ``GET /api/openapi.json``.

The Job and Event schemas are generated from the pydantic models (``Job.model_json_schema``)
in serialization mode, so the document cannot drift from what the API sends; the rest (paths,
parameters, lists, watch lines, health answers, the JSON error) is written here and checked
against a live daemon by tests/e2e/test_openapi.py (schemathesis).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Final

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from probe._core.events import Event, Reason
from probe._core.model import Job, JobState, format_rfc3339
from probe._version import __version__
from probe._web.queries import DEFAULT_LIMIT, MAX_LIMIT, MAX_NUMBER
from probe._web.watch import WATCH_CONTENT_TYPE, Watches

OPENAPI_PATH: Final = "/api/openapi.json"
PROBE_PATH: Final = "/probe"
JOBS_PATH: Final = "/api/v1/namespaces/{namespace}/jobs"
JOB_PATH: Final = "/api/v1/namespaces/{namespace}/jobs/{jobId}"
EVENTS_PATH: Final = "/api/v1/namespaces/{namespace}/events"
WRITE_METHODS: Final = ("post", "put", "patch", "delete")

_SCHEMAS: Final = "#/components/schemas/"


class _WireJsonSchema(GenerateJsonSchema):
    """The Job as ``Job.to_wire`` writes it: every field present (``null`` where a value is
    absent), timestamps as RFC 3339 date-times."""

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        return True

    def ser_schema(
        self,
        schema: core_schema.SerSchema
        | core_schema.IncExSeqSerSchema
        | core_schema.IncExDictSerSchema,
    ) -> JsonSchemaValue | None:
        if schema.get("function") is format_rfc3339:
            return {"type": "string", "format": "date-time"}
        return super().ser_schema(schema)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _SCHEMAS + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _model_schemas(model: type[Job] | type[Event]) -> dict[str, Any]:
    """``model`` and every model it is made of, as components."""
    schema = model.model_json_schema(
        by_alias=True,
        mode="serialization",
        ref_template=_SCHEMAS + "{model}",
        schema_generator=_WireJsonSchema,
    )
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {**definitions, model.__name__: schema}


def _event_schemas() -> dict[str, Any]:
    """The Event and its parts; a served event always has its sequence number."""
    schemas = _model_schemas(Event)
    metadata = schemas["EventMetadata"]
    metadata["properties"] = {
        **metadata["properties"],
        "name": {**_ref("Reason"), "description": "the reason: what happened"},
        "resourceVersion": {
            "type": "integer",
            "minimum": 1,
            "description": "the store-wide sequence number of the commit that wrote the event",
        },
    }
    schemas["EventSpec"]["properties"]["details"]["description"] = (
        "by reason: JOB_RESTARTED restartsFrom, restartsTo and rootCauses (exceptionName,"
        " message: its first line, timestamp: ms since the epoch, taskName);"
        " JOBMANAGER_FAILOVER oldStartTime and newStartTime; JOB_FAILED reason and message;"
        " JOB_STARTING and TARGET_* target (TARGET_UNREACHABLE also error); the other Job"
        " events flinkJobStatus"
    )
    return schemas


def _list_schemas() -> dict[str, Any]:
    """JobList and EventList, and the lines of their watches."""
    sequence = {
        "type": "integer",
        "minimum": 0,
        "description": "the store-wide sequence number of the last commit: watch from it",
    }

    def bookmark(kind: str) -> dict[str, Any]:
        return {
            "type": "object",
            "description": "the stream is complete up to metadata.resourceVersion: resume from it",
            "required": ["type", "object"],
            "additionalProperties": False,
            "properties": {
                "type": {"const": "BOOKMARK"},
                "object": {
                    "type": "object",
                    "required": ["kind", "metadata"],
                    "additionalProperties": False,
                    "properties": {
                        "kind": {"const": kind},
                        "metadata": {
                            "type": "object",
                            "required": ["resourceVersion"],
                            "additionalProperties": False,
                            "properties": {"resourceVersion": sequence},
                        },
                    },
                },
            },
        }

    def change(kind: str, types: list[str]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["type", "object"],
            "additionalProperties": False,
            "properties": {"type": {"enum": types}, "object": _ref(kind)},
        }

    return {
        "JobList": {
            "type": "object",
            "required": ["kind", "metadata", "items"],
            "additionalProperties": False,
            "properties": {
                "kind": {"const": "JobList"},
                "metadata": {
                    "type": "object",
                    "required": ["resourceVersion"],
                    "additionalProperties": False,
                    "properties": {"resourceVersion": sequence},
                },
                "items": {"type": "array", "items": _ref("Job")},
            },
        },
        "EventList": {
            "type": "object",
            "required": ["apiVersion", "kind", "metadata", "items"],
            "additionalProperties": False,
            "properties": {
                "apiVersion": {"const": "v1"},
                "kind": {"const": "EventList"},
                "metadata": {
                    "type": "object",
                    "required": ["resourceVersion", "continue"],
                    "additionalProperties": False,
                    "properties": {
                        "resourceVersion": sequence,
                        "continue": {
                            "type": ["string", "null"],
                            "description": "the next page's token (null: this page is the last)",
                        },
                    },
                },
                "items": {"type": "array", "items": _ref("Event"), "description": "newest first"},
            },
        },
        "JobWatchEvent": {
            "description": "One line of a watch of Jobs: a Job at its newest, ADDED the first"
            " time the stream sends a Job created after resourceVersion (from 0: every Job),"
            " MODIFIED otherwise; or a BOOKMARK",
            "oneOf": [change("Job", ["ADDED", "MODIFIED"]), bookmark("Job")],
        },
        "EventWatchEvent": {
            "description": "One line of a watch of events: an event ADDED, or a BOOKMARK",
            "oneOf": [change("Event", ["ADDED"]), bookmark("Event")],
        },
    }


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Every error answer of the API.",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "integer", "description": "the HTTP status"},
                    "message": {"type": "string"},
                },
            }
        },
    }


def _health_schemas() -> dict[str, Any]:
    return {
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "stalled"]},
                "probeLoopSilentSeconds": {
                    "type": "number",
                    "description": "only when stalled: seconds since the probe loop ran",
                },
            },
        },
        "Readiness": {
            "type": "object",
            "required": ["ready", "checks"],
            "properties": {
                "ready": {"type": "boolean"},
                "checks": {
                    "type": "object",
                    "description": "200: every check, all true; 503: the failing ones only",
                    "additionalProperties": False,
                    "properties": {
                        "targetsProbed": {
                            "type": "boolean",
                            "description": "every target was probed once, answered or not",
                        },
                        "storeWritable": {"type": "boolean"},
                        "leasesSettled": {
                            "type": "boolean",
                            "description": "the last lease claim answered: this daemon knows"
                            " which targets it holds",
                        },
                    },
                },
                "storeError": {
                    "type": "string",
                    "description": "why the last write to the state store, or the last lease"
                    " claim, failed",
                },
            },
        },
    }


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


def _error_responses() -> dict[str, Any]:
    responses = {}
    for status, description in (
        (400, "a parameter is wrong: the message says which"),
        (401, "credentials are missing or wrong (only when server.web_config sets users)"),
        (
            403,
            "the target matches no pattern of enrollment.allow (or enrollment is off);"
            " no request is sent to it",
        ),
        (404, "no such Job in this namespace, or no such path"),
        (405, "Jobs are managed by flink-probe alone: the API is read-only"),
        (409, "the name is another target's, or the target is enrolled under another name"),
        (
            429,
            "enrollment.max_targets targets are enrolled, and this one is new (/probe);"
            " server.max_watches watches are open (a watch)",
        ),
        (503, "the state store cannot be read"),
    ):
        response = _json(_ref("Error"), description)
        if status == 405:
            response["headers"] = {
                "Allow": {
                    "description": "the methods the path allows",
                    "schema": {"type": "string"},
                }
            }
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"description": "Basic", "schema": {"type": "string"}}
            }
        responses[f"Error{status}"] = response
    return responses


def _read_only(path_name: str) -> dict[str, Any]:
    """POST, PUT, PATCH and DELETE on a Job path: always 405."""
    return {
        method: {
            "operationId": f"{method}{path_name}",
            "summary": "Refused: Jobs cannot be created, changed or deleted through the API",
            "tags": ["jobs"],
            "responses": _errors(401, 405),
        }
        for method in WRITE_METHODS
    }


def _probe_parameters() -> list[dict[str, Any]]:
    name = {"type": "string", "pattern": "^[A-Za-z0-9_.-]*$"}

    def query(key: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": key, "in": "query", "schema": schema, "description": description}

    return [
        {
            **query(
                "target",
                {"type": "string", "minLength": 1},
                "the Flink REST URL (http(s)://host:port/path/, or host:port); never with"
                " credentials",
            ),
            "required": True,
        },
        query("namespace", name, "namespace of the Jobs found there (default: default)"),
        query(
            "deployment",
            {"type": "string"},
            "their deployment name (default: each Flink job's own name)",
        ),
        query("name", name, "the target's name (default: host:port and path of the URL)"),
        query("profile", name, "an enrollment.profiles entry: credentials and TLS"),
    ]


def _list_answers(item_list: str, line: str, description: str) -> dict[str, Any]:
    """A list's answers: the list as JSON, or with ``watch=true`` its changes as lines."""
    ok = _json(_ref(item_list), f"{description}; with watch=true, every change as one line")
    ok["content"][WATCH_CONTENT_TYPE] = {"schema": _ref(line)}
    return {"200": ok, **_errors(400, 401, 404, 429, 503)}


_WATCH_DESCRIPTION: Final = (
    "With watch=true the answer streams newline-delimited JSON (Kubernetes' watch): one line"
    " per change committed after resourceVersion, in commit order, filtered as the list is, and"
    f" BOOKMARK lines (after every batch of changes and after {Watches.heartbeat:g} s of"
    " silence) saying how far the stream is complete. A client that resumes from the last"
    " resourceVersion it read gets every later change exactly once. A reader that takes no data"
    f" for {Watches.write_timeout:g} s is disconnected."
)


def _paths() -> dict[str, Any]:
    namespace = {"$ref": "#/components/parameters/namespace"}
    job_id = {"$ref": "#/components/parameters/jobId"}
    watch = [
        {"$ref": f"#/components/parameters/{name}"}
        for name in ("watch", "resourceVersion", "timeoutSeconds")
    ]
    text = {"schema": {"type": "string"}}
    return {
        "/": {
            "get": {
                "operationId": "index",
                "summary": "A page with links",
                "security": [],
                "responses": {"200": {"description": "HTML", "content": {"text/html": text}}},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "description": "Prometheus text format; OpenMetrics when the Accept header asks"
                " for application/openmetrics-text; gzip when accepted. Values are a cache of"
                " the probe loop, not fetched at scrape time.",
                "tags": ["metrics"],
                "responses": {
                    "200": {
                        "description": "the metrics",
                        "content": {"text/plain": text, "application/openmetrics-text": text},
                    },
                    **_errors(401),
                },
            }
        },
        PROBE_PATH: {
            "get": {
                "operationId": "probe",
                "summary": "One target's series; the first scrape of an allowed URL enrolls it",
                "description": "The multi-target exporter pattern: the per-Job families of"
                " /metrics for the target's Jobs plus flink_probe_target_up, from the cache. A"
                " URL that configuration, a targets file or http_sd declares is answered as"
                " that target; a new one that matches enrollment.allow is enrolled and probed"
                " from then on (the answer waits for its first round, at most"
                " enrollment.first_wait). Format and content types as /metrics (no gzip).",
                "tags": ["metrics"],
                "parameters": _probe_parameters(),
                "responses": {
                    "200": {
                        "description": "the target's series",
                        "content": {"text/plain": text, "application/openmetrics-text": text},
                    },
                    **_errors(400, 401, 403, 404, 409, 429),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the probe loop runs",
                "security": [],
                "tags": ["health"],
                "responses": {
                    "200": _json(_ref("Health"), "the probe loop runs"),
                    "503": _json(
                        _ref("Health"), "the probe loop was silent for 5 of its current intervals"
                    ),
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: every target probed once, store writable",
                "security": [],
                "tags": ["health"],
                "responses": {
                    "200": _json(_ref("Readiness"), "ready"),
                    "503": _json(_ref("Readiness"), "not ready: the failing checks, false"),
                },
            }
        },
        OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": _json({"type": "object"}, "the OpenAPI document"),
                    **_errors(401),
                },
            }
        },
        JOBS_PATH: {
            "parameters": [namespace],
            "get": {
                "operationId": "listJobs",
                "summary": "Every Job of the namespace, history (final Jobs) included; or a"
                " watch of them",
                "description": _WATCH_DESCRIPTION,
                "tags": ["jobs"],
                "parameters": [
                    {"$ref": "#/components/parameters/deploymentName"},
                    {"$ref": "#/components/parameters/state"},
                    *watch,
                ],
                "responses": _list_answers("JobList", "JobWatchEvent", "the Jobs"),
            },
            **_read_only("Jobs"),
        },
        JOB_PATH: {
            "parameters": [namespace, job_id],
            "get": {
                "operationId": "getJob",
                "summary": "One Job",
                "tags": ["jobs"],
                "responses": {"200": _json(_ref("Job"), "the Job"), **_errors(401, 404)},
            },
            **_read_only("Job"),
        },
        EVENTS_PATH: {
            "parameters": [namespace],
            "get": {
                "operationId": "listEvents",
                "summary": "What happened to the namespace's Jobs and targets, and why, newest"
                " first, a page at a time; or a watch of it",
                "description": _WATCH_DESCRIPTION,
                "tags": ["events"],
                "parameters": [
                    {"$ref": f"#/components/parameters/{name}"}
                    for name in ("eventJobId", "deploymentName", "reason", "since", "limit")
                ]
                + [{"$ref": "#/components/parameters/continue"}, *watch],
                "responses": _list_answers("EventList", "EventWatchEvent", "the events"),
            },
        },
    }


def _query_parameters() -> dict[str, Any]:
    """The query parameters of the lists and watches, as components."""
    integer = {"type": "integer", "maximum": MAX_NUMBER}

    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "schema": schema, "description": description}

    return {
        "deploymentName": query(
            "deploymentName", {"type": "string"}, "only those of this metadata.deploymentName"
        ),
        "state": query(
            "state", {"enum": [state.value for state in JobState]}, "only Jobs in this state"
        ),
        "eventJobId": query(
            "jobId",
            {
                "type": "string",
                "pattern": "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                "[0-9a-fA-F]{12}|[0-9a-fA-F]{32})$",
            },
            "only the events of this Job (its metadata.id, dashed or as 32 hex digits)",
        ),
        "reason": query(
            "reason", {"enum": [reason.value for reason in Reason]}, "only events of this reason"
        ),
        "since": query(
            "since",
            {"type": "string", "format": "date-time"},
            "only events created at or after this RFC 3339 time",
        ),
        "limit": query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            "the most events in one page",
        ),
        "continue": query(
            "continue",
            {"type": "string", "pattern": "^[0-9]{1,18}$"},
            "the token of the next page: the previous page's metadata.continue (pass the same"
            " filters)",
        ),
        "watch": query(
            "watch",
            {"type": "boolean", "default": False},
            "true: stream the changes instead of answering the list",
        ),
        "resourceVersion": query(
            "resourceVersion",
            {**integer, "minimum": 0, "default": 0},
            "with watch=true: stream the changes committed after this sequence number (a"
            " list's metadata.resourceVersion, or the last one a watch delivered); 0:"
            " everything, each Job once at its newest",
        ),
        "timeoutSeconds": query(
            "timeoutSeconds",
            {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_NUMBER},
            "with watch=true: end the stream after this many seconds (default: never)",
        ),
    }


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flink-probe",
            "version": __version__,
            "description": "Apache Flink jobs as Ververica Platform Job resources (read-only),"
            " their events, Prometheus metrics and health checks.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        # Basic auth applies only when server.web_config sets basic_auth_users.
        "security": [{}, {"basicAuth": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
            "parameters": {
                "namespace": {
                    "name": "namespace",
                    "in": "path",
                    "required": True,
                    "description": "the Jobs' metadata.namespace",
                    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
                },
                **_query_parameters(),
                "jobId": {
                    "name": "jobId",
                    "in": "path",
                    "required": True,
                    "description": "metadata.id: a UUID, dashed or as 32 hex digits",
                    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
                },
            },
            "responses": _error_responses(),
            "schemas": {
                **_model_schemas(Job),
                **_event_schemas(),
                **_list_schemas(),
                "Error": _error_schema(),
                **_health_schemas(),
            },
        },
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document (built once; treat it as read-only)."""
    return _document()


@functools.cache
def openapi_json() -> str:
    """The document as JSON text, as served."""
    return json.dumps(openapi_document(), separators=(",", ":"))
