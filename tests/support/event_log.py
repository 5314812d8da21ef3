"""The daemon's event log as a client reads it: the list, page by page, and a watch."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

from daemon_harness import ProbeClient


def read_watch(
    base_url: str, path: str, resource_version: int, until: int, within: float = 30.0
) -> list[dict[str, Any]]:
    """The ADDED and MODIFIED lines of a watch of ``path`` from ``resource_version``, read until
    a BOOKMARK at ``until`` or later (the stream is complete up to there)."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    deadline = time.monotonic() + within
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=within)
    separator = "&" if "?" in path else "?"
    try:
        connection.request("GET", f"{path}{separator}watch=true&resourceVersion={resource_version}")
        response = connection.getresponse()
        assert response.status == 200, response.read()
        changes: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            line = response.readline()
            assert line, "the watch ended before it was complete"
            change = json.loads(line)
            if change["type"] == "BOOKMARK":
                if int(change["object"]["metadata"]["resourceVersion"]) >= until:
                    return changes
                continue
            changes.append(change)
        raise AssertionError(f"no BOOKMARK at {until} within {within} s; read {changes}")
    finally:
        connection.close()


EVENTS = "/api/v1/namespaces/default/events"


def events_of(client: ProbeClient, job_id: str | None = None, **query: str) -> list[dict[str, Any]]:
    """Every event (of ``job_id``), oldest first, read page by page."""
    items: list[dict[str, Any]] = []
    parameters = {"limit": "7", **query}
    if job_id is not None:
        parameters["jobId"] = job_id
    while True:
        text = "&".join(f"{key}={value}" for key, value in parameters.items())
        status, body = client.get_json(f"{EVENTS}?{text}")
        assert status == 200, body
        items += body["items"]
        token = body["metadata"].get("continue")
        if not token:
            return items[::-1]
        parameters["continue"] = token


def reasons(events: list[dict[str, Any]]) -> list[str]:
    return [event["metadata"]["name"] for event in events]


def steps(events: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(from, to) of every JOB_RESTARTED event, oldest first."""
    return [
        (event["spec"]["details"]["restartsFrom"], event["spec"]["details"]["restartsTo"])
        for event in events
        if event["metadata"]["name"] == "JOB_RESTARTED"
    ]


def causes(events: list[dict[str, Any]]) -> list[str]:
    """The messages of every root cause the JOB_RESTARTED events carry, oldest first."""
    return [
        cause["message"]
        for event in events
        if event["metadata"]["name"] == "JOB_RESTARTED"
        for cause in event["spec"]["details"]["rootCauses"]
    ]
