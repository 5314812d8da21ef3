"""``flink-probe events``: what happened to a running daemon's Jobs, and why, through its API.

Reads ``GET /api/v1/namespaces/{namespace}/events`` page by page and prints a table, oldest
first as a log reads: time, reason, the Job (deployment and short id, or the target of a
target's event) and the message. ``--follow`` then watches the list from the resourceVersion
of that answer (``?watch=true``) and prints each event as the daemon commits it, until Ctrl-C
(exit 0). Errors as ``flink-probe jobs``: one line on stderr, exit code 1.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TextIO

from probe._cogs.errors import ExitCode, one_line
from probe._commands.jobs import (
    DEFAULT_NAMESPACE,
    DaemonError,
    DaemonUrl,
    daemon_answer,
    json_answer,
)
from probe._core.events import Reason

TABLE_HEADERS: Final = ("TIME", "REASON", "JOB", "MESSAGE")
PAGE: Final = 1000
"""Events asked per request: the API's largest page."""
SHORT_ID: Final = 8
_TIME_WIDTH: Final = len("2025-06-01T12:00:00.000Z")
_REASON_WIDTH: Final = max(len(reason.value) for reason in Reason)


@dataclass(frozen=True, slots=True)
class EventSelection:
    """Which events to show: those of one namespace, and of every filter given."""

    namespace: str = DEFAULT_NAMESPACE
    job_id: str | None = None
    deployment: str | None = None
    reason: Reason | None = None

    @property
    def path(self) -> str:
        return f"api/v1/namespaces/{urllib.parse.quote(self.namespace, safe='')}/events"

    def query(self) -> dict[str, str]:
        """The list's filters as query parameters."""
        filters = {"jobId": self.job_id, "deploymentName": self.deployment, "reason": self.reason}
        return {name: str(value) for name, value in filters.items() if value is not None}


def show_events(
    daemon: DaemonUrl, selection: EventSelection, *, follow: bool, out: TextIO, err: TextIO
) -> int:
    """Print the selected events (and, with `follow`, each new one until Ctrl-C). Returns the
    exit code: 0, or 1 (daemon unreachable, not flink-probe, or it ended the watch)."""
    try:
        events, version = fetch_events(daemon, selection)
        rows = [event_row(event) for event in reversed(events)]
        if not rows and not follow:
            print(f"No events in namespace {selection.namespace}.", file=err)
            return ExitCode.OK
        job_width = max(len(row[2]) for row in [TABLE_HEADERS, *rows])
        for row in [TABLE_HEADERS, *rows]:
            out.write(table_line(row, job_width))
        out.flush()
        if follow:
            for event in watch_events(daemon, selection, version):
                out.write(table_line(event_row(event), job_width))
                out.flush()
            raise DaemonError(f"the daemon at {daemon.url} ended the watch (is it stopping?)")
    except DaemonError as error:
        print(f"flink-probe: {error}", file=err)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK


def fetch_events(daemon: DaemonUrl, selection: EventSelection) -> tuple[list[dict[str, Any]], int]:
    """Every selected event, newest first, and the list's resourceVersion (its first page's:
    a watch from it sends every later event); DaemonError saying what failed."""
    events: list[dict[str, Any]] = []
    version: int | None = None
    token: str | None = None
    while True:
        page = {"continue": token} if token is not None else {}
        with daemon_answer(
            daemon, selection.path, {**selection.query(), "limit": str(PAGE), **page}
        ) as (endpoint, answer):
            body = answer.read()
        document = json_answer(endpoint, body)
        if not _is_event_list(document):
            raise DaemonError(f"{endpoint}: the answer is not an EventList: is this flink-probe?")
        events += document["items"]
        if version is None:
            version = int(document["metadata"]["resourceVersion"])
        token = document["metadata"]["continue"]
        if token is None:
            return events, version


def watch_events(
    daemon: DaemonUrl, selection: EventSelection, after: int
) -> Iterator[dict[str, Any]]:
    """Each selected event committed after the sequence number ``after``, as the daemon
    commits it, until it ends the watch; DaemonError saying what failed."""
    query = {**selection.query(), "watch": "true", "resourceVersion": str(after)}
    with daemon_answer(daemon, selection.path, query) as (endpoint, answer):
        for line in answer:
            try:
                change = json.loads(line)
                kind = change["type"]
            except (ValueError, KeyError, TypeError):
                raise DaemonError(
                    f"{endpoint}: the answer is not a watch of events: is this flink-probe?"
                ) from None
            if kind == "ADDED" and _is_event(change.get("object")):
                yield change["object"]


def event_row(event: Mapping[str, Any]) -> list[str]:
    metadata = event["metadata"]
    return [
        str(metadata["createdAt"]),
        str(metadata["name"]),
        _subject(event),
        one_line(str(event["spec"]["message"])),
    ]


def table_line(row: Sequence[str], job_width: int) -> str:
    """One line of the table: fixed columns, so that followed events line up under the
    first ones."""
    time, reason, job, message = row
    cells = [time.ljust(_TIME_WIDTH), reason.ljust(_REASON_WIDTH), job.ljust(job_width), message]
    return "   ".join(cells).rstrip() + "\n"


def _subject(event: Mapping[str, Any]) -> str:
    """``deployment/short-id`` of a Job's event; ``target/name`` of a target's."""
    metadata = event["metadata"]
    job_id = metadata.get("jobId")
    if job_id is None:
        return f"target/{event['spec'].get('details', {}).get('target', '-')}"
    return f"{metadata.get('deploymentName') or '-'}/{str(job_id)[:SHORT_ID]}"


def _is_event_list(document: Mapping[str, Any]) -> bool:
    metadata = document.get("metadata")
    return (
        document.get("kind") == "EventList"
        and isinstance(metadata, dict)
        and isinstance(metadata.get("resourceVersion"), int)
        and isinstance(metadata.get("continue", 0), str | None)
        and isinstance(document.get("items"), list)
        and all(_is_event(item) for item in document["items"])
    )


def _is_event(item: object) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("metadata"), dict)
        and {"createdAt", "name"} <= set(item["metadata"])
        and isinstance(item.get("spec"), dict)
        and "message" in item["spec"]
    )
