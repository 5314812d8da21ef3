"""``flink-probe jobs``: list the Jobs of a running daemon, through its HTTP API.

A one-shot command, so plain ``urllib`` and no event loop. It reads
``GET /api/v1/namespaces/{namespace}/jobs`` and prints a table (like ``kubectl get``), or the
JobList as JSON or YAML, optionally only the Jobs in one state. A daemon that cannot be reached
or does not answer like flink-probe is one line on stderr and exit code 1; a URL that is not
one is refused before any request (`parse_daemon_url`, a usage error). A daemon behind
``server.web_config`` is reached with ``https://`` and credentials in the URL.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO

import yaml

from probe._cogs.errors import ExitCode
from probe._core.model import JobState

DEFAULT_URL: Final = "http://127.0.0.1:9270"
DEFAULT_NAMESPACE: Final = "default"
REQUEST_TIMEOUT: Final = 10.0
TABLE_HEADERS: Final = (
    "ID",
    "DEPLOYMENT",
    "STATE",
    "FLINK STATUS",
    "RESTARTS",
    "TARGET",
    "LAST UPDATE",
    "AGE",
)

OutputFormat = Literal["table", "json", "yaml"]


class DaemonError(Exception):
    """The daemon could not be asked, or did not answer like flink-probe; one line."""


@dataclass(frozen=True, slots=True)
class DaemonUrl:
    """Where the daemon is: its URL without user information, and the HTTP basic
    authentication that user information stood for (never shown)."""

    url: str
    authorization: str | None


def parse_daemon_url(text: str) -> DaemonUrl:
    """`text` as a DaemonUrl; ValueError with a one-line reason that never repeats `text`
    (it may hold a password)."""
    # http.client refuses these later, and with the whole URL in its message.
    if any(char.isspace() or not char.isprintable() for char in text):
        raise ValueError("the URL contains a space or an unprintable character")
    try:
        parts = urllib.parse.urlsplit(text)
        usable = (
            parts.scheme.lower() in ("http", "https")
            and bool(parts.hostname)
            and (parts.port is None or parts.port > 0)
        )
    except ValueError:  # a bracket left open, a port that is not a number up to 65535
        usable = False
    if not usable:
        raise ValueError(
            "not an http:// or https:// URL with a host, such as http://127.0.0.1:9270"
        )
    if parts.username is None:
        return DaemonUrl(text, None)
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return DaemonUrl(urllib.parse.urlunsplit(bare), f"Basic {token}")


def list_jobs(
    daemon: DaemonUrl,
    *,
    namespace: str | None,
    state: JobState | None,
    output: OutputFormat,
    out: TextIO,
    err: TextIO,
) -> int:
    """Print the Jobs of the daemon at `daemon` (namespace `default` when None), only those in
    `state` when given. Returns the exit code: 0, or 1 (daemon unreachable or not flink-probe)."""
    namespace = namespace or DEFAULT_NAMESPACE
    try:
        items = fetch_jobs(daemon, namespace)
    except DaemonError as error:
        print(f"flink-probe: {error}", file=err)
        return ExitCode.FAILED
    if state is not None:
        items = [job for job in items if job["status"]["state"] == state.value]
    if output == "json":
        out.write(json.dumps({"kind": "JobList", "items": items}, indent=2) + "\n")
    elif output == "yaml":
        out.write(yaml.safe_dump({"kind": "JobList", "items": items}, sort_keys=False))
    elif items:
        now = datetime.now(UTC)
        out.write(render_table(TABLE_HEADERS, [table_row(job, now) for job in items]))
    else:
        which = f" in state {state.value}" if state else ""
        print(f"No jobs{which} in namespace {namespace}.", file=err)
    return ExitCode.OK


def fetch_jobs(daemon: DaemonUrl, namespace: str) -> list[dict[str, Any]]:
    """The `items` of the daemon's JobList for `namespace`; DaemonError saying what failed."""
    path = f"api/v1/namespaces/{urllib.parse.quote(namespace, safe='')}/jobs"
    with daemon_answer(daemon, path) as (endpoint, answer):
        body = answer.read()
    document = json_answer(endpoint, body)
    if not (
        document.get("kind") == "JobList"
        and isinstance(document.get("items"), list)
        and all(_is_job(item) for item in document["items"])
    ):
        raise DaemonError(f"{endpoint}: the answer is not a JobList: is this flink-probe?")
    items: list[dict[str, Any]] = document["items"]
    return items


@contextlib.contextmanager
def daemon_answer(
    daemon: DaemonUrl, path: str, query: Mapping[str, str] | None = None
) -> Iterator[tuple[str, http.client.HTTPResponse]]:
    """The endpoint asked and the daemon's answer (2xx) to ``GET path?query``, to read in the
    block; DaemonError saying what failed, in the request or while the block reads."""
    url = daemon.url
    headers = {"Accept": "application/json"}
    if daemon.authorization is not None:
        headers["Authorization"] = daemon.authorization
    endpoint = urllib.parse.urljoin(url.rstrip("/") + "/", path)
    if query:
        endpoint += "?" + urllib.parse.urlencode(query)
    try:
        request = urllib.request.Request(endpoint, headers=headers)
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            yield endpoint, response
    except urllib.error.HTTPError as error:
        with error:
            raise DaemonError(f"{endpoint}: {_http_error(error.code, error.read())}") from None
    except urllib.error.URLError as error:
        reason = error.reason
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        raise DaemonError(
            f"cannot reach the daemon at {url}: {text} (is `flink-probe run` running there?)"
        ) from None
    except (OSError, ValueError, http.client.HTTPException) as error:
        # A timeout while reading, a reset connection, an answer cut short, or a host or path
        # urllib cannot use.
        raise DaemonError(f"cannot reach the daemon at {url}: {error}") from None


def json_answer(endpoint: str, body: bytes) -> dict[str, Any]:
    """The JSON object the daemon answered; DaemonError if it is none."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DaemonError(f"{endpoint}: the answer is not JSON: is this flink-probe?") from None
    if not isinstance(document, dict):
        raise DaemonError(f"{endpoint}: the answer is not a JSON object: is this flink-probe?")
    return document


def table_row(job: Mapping[str, Any], now: datetime) -> list[str]:
    metadata = job["metadata"]
    status = job["status"]
    started = status.get("started") or {}
    restarts = started.get("observedFlinkJobRestarts")
    return [
        str(metadata["id"]),
        str(metadata.get("deploymentName", "")),
        str(status["state"]),
        str(started.get("observedFlinkJobStatus", "-")),
        "-" if restarts is None else str(restarts),
        str(metadata.get("annotations", {}).get("flink-probe/target", "-")),
        _age_of(started.get("lastUpdateTime"), now, suffix=" ago"),
        _age_of(metadata.get("createdAt"), now),
    ]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, separated by three spaces (as kubectl does)."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [headers, *rows]
    ]
    return "".join(line.rstrip() + "\n" for line in lines)


def format_age(seconds: float) -> str:
    """``5s``, ``3m``, ``2h``, ``4d``: the largest whole unit, as kubectl shows ages."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _age_of(timestamp: object, now: datetime, suffix: str = "") -> str:
    if not isinstance(timestamp, str):
        return "-"
    try:
        then = datetime.fromisoformat(timestamp)
    except ValueError:
        return "-"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return format_age((now - then).total_seconds()) + suffix


def _is_job(item: object) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("metadata"), dict)
        and "id" in item["metadata"]
        and isinstance(item.get("status"), dict)
        and "state" in item["status"]
    )


def _http_error(status: int, body: bytes) -> str:
    """The daemon's JSON error message, or the status alone for anything else."""
    try:
        document = json.loads(body)
        message = document["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: not a flink-probe answer (is this flink-probe?)"
    return f"HTTP {status}: {message}"
