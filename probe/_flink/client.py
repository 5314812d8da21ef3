"""The Flink REST client: four GET requests, and pure parsers for their answers.

Everything that can go wrong between the daemon and a Flink cluster ends up as one
`FlinkError` whose `kind` is a short, stable label (it becomes the `reason` label of a
Prometheus series). The parsers take raw bytes and never raise anything else, whatever the
bytes: a cluster, or whatever sits in front of it, may answer with anything.

Parsing uses pydantic's Rust JSON parser with strict types into frozen dataclasses: faster
than `json.loads` plus hand-written checks, and it bounds nesting depth.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from ssl import SSLContext
from typing import Annotated, Any, ClassVar, Final

import aiohttp
import pydantic_core
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from yarl import URL

from probe._cogs.credentials import BasicCredentials, BearerToken
from probe._cogs.errors import one_line
from probe._core.causes import RootCause
from probe._core.model import JID_PATTERN, FlinkJobStatus, is_jid

__all__ = [
    "FailureKind",
    "FlinkClient",
    "FlinkError",
    "OverviewEntry",
    "parse_job_details",
    "parse_newest_exception",
    "parse_num_restarts",
    "parse_overview",
]

DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
# An error answer is read only to say what went wrong in one line: a little is enough.
_ERROR_BODY_BYTES: Final = 64 * 1024
MAX_EXCEPTION_MESSAGE_CHARS: Final = 1000
# numRestarts above this is not a count but a broken (or hostile) answer.
MAX_NUM_RESTARTS: Final = 1_000_000_000
_MAX_DETAIL_CHARS: Final = 200
# An epoch millisecond beyond a signed 64-bit integer is not a time but a broken answer.
_MAX_EPOCH_MS: Final = 2**63 - 1


class FailureKind(StrEnum):
    """Why a request to Flink gave no usable answer (a Prometheus `reason` label value)."""

    REFUSED = "refused"
    RESET = "reset"
    TIMEOUT = "timeout"
    TLS = "tls"
    HTTP_STATUS = "http_status"
    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    BAD_SHAPE = "bad_shape"
    REDIRECT = "redirect"


class FlinkError(Exception):
    """A request to Flink that gave no usable answer.

    `detail` is one short line naming the request path (never the base URL, which may carry
    credentials) and what happened; `status` is the HTTP status when there was one.
    """

    def __init__(self, kind: FailureKind, detail: str, *, status: int | None = None) -> None:
        super().__init__(kind, detail, status)
        self.kind = kind
        self.status = status
        self.detail = one_line(detail, _MAX_DETAIL_CHARS)

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def _flink_status(value: FlinkJobStatus) -> FlinkJobStatus:
    # UNKNOWN is the daemon's own word for "could not learn it", never something Flink says.
    if value is FlinkJobStatus.UNKNOWN:
        raise ValueError("UNKNOWN is not a Flink job status")
    return value


@dataclass(frozen=True, slots=True)
class OverviewEntry:
    """A Flink job as `/jobs/overview` and `/jobs/:jid` show it (other fields are ignored)."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(strict=True, extra="ignore")

    jid: Annotated[str, Field(pattern=f"^{JID_PATTERN}$")]
    name: str
    state: Annotated[FlinkJobStatus, AfterValidator(_flink_status)]
    # Epoch ms. A new JobManager process gives a recovered job a new, larger start-time.
    start_time: Annotated[int, Field(alias="start-time", ge=0, le=_MAX_EPOCH_MS)]
    # Epoch ms of the newest state change of any task: moves with every restart. Only in
    # /jobs/overview (None from /jobs/:jid); 0 while the job initialises.
    last_modification: Annotated[
        int | None, Field(alias="last-modification", ge=0, le=_MAX_EPOCH_MS)
    ] = None


class _Overview(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    jobs: list[OverviewEntry]


class _Metric(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    id: str
    value: str


_OVERVIEW: Final = TypeAdapter(_Overview)
_JOB_DETAILS: Final = TypeAdapter(OverviewEntry)
_METRICS: Final = TypeAdapter(list[_Metric])


def _validation_failure(what: str, error: ValidationError) -> FlinkError:
    first = error.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return FlinkError(FailureKind.NOT_JSON, f"{what} is not JSON: {first['msg']}")
    where = ".".join(str(part) for part in first["loc"]) or "top level"
    return FlinkError(
        FailureKind.BAD_SHAPE, f"{what} is not of Flink's shape at {where}: {first['msg']}"
    )


def parse_overview(body: bytes) -> list[OverviewEntry]:
    """`GET /jobs/overview`: every job the cluster knows, terminal ones included."""
    try:
        return _OVERVIEW.validate_json(body).jobs
    except ValidationError as error:
        raise _validation_failure("job overview", error) from None


def parse_job_details(body: bytes) -> OverviewEntry:
    """`GET /jobs/:jid`: the same facts as the job's overview entry."""
    try:
        return _JOB_DETAILS.validate_json(body)
    except ValidationError as error:
        raise _validation_failure("job details", error) from None


def parse_num_restarts(body: bytes) -> int | None:
    """`GET /jobs/:jid/metrics?get=numRestarts`: the count, or None while Flink has none.

    Flink answers `[]` until its metric fetcher has run, and also for a job it does not know.
    """
    try:
        metrics = _METRICS.validate_json(body)
    except ValidationError as error:
        raise _validation_failure("numRestarts metric", error) from None
    for metric in metrics:
        if metric.id == "numRestarts":
            return _restart_count(metric.value)
    return None


def _restart_count(value: str) -> int:
    # Checked by hand: int() would also take " 3", "+3", "3_0" and non-ASCII digits.
    if not (value.isascii() and value.isdigit() and len(value) <= 10):
        raise FlinkError(FailureKind.BAD_SHAPE, f"numRestarts {value[:20]!r} is not a count")
    count = int(value)
    if count > MAX_NUM_RESTARTS:
        raise FlinkError(FailureKind.BAD_SHAPE, f"numRestarts {count} is absurdly large")
    return count


def parse_newest_exception(body: bytes) -> str | None:
    """`GET /jobs/:jid/exceptions`: the newest failure as one line, or None if there is none.

    The line is the first line of the newest entry's stack trace, plus its deepest
    `Caused by:` (the root cause a user wants to read), e.g. "...JobException: Recovery is
    suppressed by NoRestartBackoffTimeStrategy; caused by: java.lang.RuntimeException: ...".
    When the entry's own trace names no cause, the first concurrent exception (the task
    failure that triggered it) supplies one.
    """
    entries = _history_entries(body)
    if not entries:
        return None
    newest = entries[0]
    head, cause = _describe_exception(newest)
    if head is None:
        raise FlinkError(
            FailureKind.BAD_SHAPE, "newest exception has neither a stacktrace nor an exceptionName"
        )
    if cause is None and isinstance(newest, dict):
        concurrent = newest.get("concurrentExceptions")
        if isinstance(concurrent, list) and concurrent:
            concurrent_head, concurrent_cause = _describe_exception(concurrent[0])
            cause = concurrent_cause or concurrent_head
    message = head if cause is None or cause == head else f"{head}; caused by: {cause}"
    if len(message) > MAX_EXCEPTION_MESSAGE_CHARS:
        message = message[: MAX_EXCEPTION_MESSAGE_CHARS - 1] + "…"
    return message


def parse_root_causes(body: bytes) -> tuple[RootCause, ...]:
    """`GET /jobs/:jid/exceptions`: every entry of the history as a root cause, newest first.

    Entries without a name or a timestamp are skipped: they cannot be told apart across reads.
    """
    entries = _history_entries(body)
    causes = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name, timestamp = entry.get("exceptionName"), entry.get("timestamp")
        if not isinstance(name, str) or not name or type(timestamp) is not int:
            continue
        head, _ = _describe_exception(entry)
        message = (head or "").removeprefix(name).removeprefix(":").strip()
        if len(message) > MAX_EXCEPTION_MESSAGE_CHARS:
            message = message[: MAX_EXCEPTION_MESSAGE_CHARS - 1] + "…"
        task = entry.get("taskName")
        causes.append(RootCause(name, message, timestamp, task if isinstance(task, str) else None))
    return tuple(causes)


def _history_entries(body: bytes) -> list[Any]:
    """The entries of an exception history answer, newest first."""
    try:
        document = pydantic_core.from_json(body)
    except ValueError as error:
        raise FlinkError(FailureKind.NOT_JSON, f"exception history is not JSON: {error}") from None
    history = document.get("exceptionHistory") if isinstance(document, dict) else None
    entries = history.get("entries") if isinstance(history, dict) else None
    if not isinstance(entries, list):
        raise FlinkError(
            FailureKind.BAD_SHAPE, "exception history has no exceptionHistory.entries list"
        )
    return entries


_CAUSED_BY: Final = "Caused by: "


def _describe_exception(entry: Any) -> tuple[str | None, str | None]:
    """(first line, first line of the deepest cause) of one exception entry."""
    if not isinstance(entry, dict):
        return None, None
    stacktrace = entry.get("stacktrace")
    if isinstance(stacktrace, str) and stacktrace.strip():
        lines = stacktrace.strip().splitlines()
        # Only the main chain's causes start a line; suppressed exceptions' are indented.
        causes = [line for line in lines if line.startswith(_CAUSED_BY)]
        deepest = causes[-1].removeprefix(_CAUSED_BY).strip() if causes else None
        return lines[0].strip(), deepest or None
    name = entry.get("exceptionName")
    if isinstance(name, str) and name.strip():
        return name.strip(), None
    return None, None


def _flink_error_summary(body: bytes) -> str:
    """One line from Flink's `{"errors": [...]}` body, or "" for anything else."""
    try:
        document = pydantic_core.from_json(body, allow_partial=True)
    except ValueError:
        return ""
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return ""
    lines = []
    for error in errors[:2]:
        if isinstance(error, str):
            # A 500's second entry is "<Exception on server side:\n<the exception>...".
            meaningful = [
                line.strip()
                for line in error.splitlines()
                if line.strip() and not line.startswith("<Exception on server side")
            ]
            lines.extend(meaningful[:1])
    return "; ".join(lines)


def _check_jid(jid: str) -> str:
    if not is_jid(jid):
        raise ValueError(f"Flink job id {jid!r} is not 32 lower-case hex digits")
    return jid


_AUTHORIZATION: Final = "authorization"


class FlinkClient:
    """The REST API of one Flink cluster, through the process's shared aiohttp session.

    Every request has its own total timeout, never follows a redirect and never holds more
    than `max_body_bytes` of an answer in memory. Every failure is a `FlinkError`; only
    `asyncio.CancelledError` (and programming errors such as a closed session) pass through.

    TLS and credentials are per client, since the session is shared by every target: `ssl`
    is the context for an https URL (None: aiohttp's default, the system's CAs; False: no
    certificate check), `server_name` the host name to verify and send as SNI instead of the
    URL's, `auth` the credentials sent with every request (a redirect, which could carry them
    elsewhere, is never followed).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout: float,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        headers: Mapping[str, str] | None = None,
        ssl: SSLContext | bool | None = None,
        server_name: str | None = None,
        auth: BasicCredentials | BearerToken | None = None,
    ) -> None:
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"Flink URL {base_url!r} is not an http(s) URL with a host")
        if url.query_string or url.fragment:
            raise ValueError(f"Flink URL {base_url!r} must not have a query or fragment")
        if timeout <= 0 or max_body_bytes <= 0:
            raise ValueError("timeout and max_body_bytes must be positive")
        request_headers = dict(headers or {})
        has_authorization = any(name.lower() == _AUTHORIZATION for name in request_headers)
        if auth is not None and (has_authorization or url.user is not None):
            # aiohttp would refuse it at the first request, as a ValueError.
            raise ValueError("auth cannot be combined with an Authorization header or URL user")
        secrets: list[str | None] = [url.password, url.user, *request_headers.values()]
        if auth is not None:
            request_headers["Authorization"] = auth.header_value()
            secret = auth.password if isinstance(auth, BasicCredentials) else auth.token
            secrets += (secret, request_headers["Authorization"].partition(" ")[2])
        self._session = session
        # A path prefix (Flink behind a proxy at /flink/) is kept: paths are appended to it.
        self._base = str(url).rstrip("/")
        self._timeout_seconds = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_body_bytes = max_body_bytes
        self._headers = request_headers or None
        self._ssl: SSLContext | bool = True if ssl is None else ssl
        self._server_name = server_name
        # Error texts (aiohttp's included) can quote the URL or a header: never repeat these.
        self._secrets = [secret for secret in secrets if secret and len(secret) >= 3]

    async def overview(self) -> list[OverviewEntry]:
        path = "/jobs/overview"
        status, body = await self._get(path)
        if status != 200:
            raise self._unexpected_status(path, status, body)
        return parse_overview(body)

    async def job_details(self, jid: str) -> OverviewEntry | None:
        """The job, or None when Flink answers 404 (it does not know the job)."""
        path = f"/jobs/{_check_jid(jid)}"
        status, body = await self._get(path)
        if status == 404:
            return None
        if status != 200:
            raise self._unexpected_status(path, status, body)
        return parse_job_details(body)

    async def num_restarts(self, jid: str) -> int | None:
        """Flink's restart count, or None while it has none (also for an unknown job)."""
        path = f"/jobs/{_check_jid(jid)}/metrics?get=numRestarts"
        status, body = await self._get(path)
        if status != 200:
            raise self._unexpected_status(path, status, body)
        return parse_num_restarts(body)

    async def newest_exception(self, jid: str) -> str | None:
        """The newest failure as one line, or None (no failure recorded, or job unknown)."""
        path = f"/jobs/{_check_jid(jid)}/exceptions"
        status, body = await self._get(path)
        if status == 404:
            return None
        if status != 200:
            raise self._unexpected_status(path, status, body)
        return parse_newest_exception(body)

    async def root_causes(self, jid: str, max_exceptions: int) -> tuple[RootCause, ...]:
        """The newest ``max_exceptions`` entries of the job's exception history (none for an
        unknown job)."""
        path = f"/jobs/{_check_jid(jid)}/exceptions?maxExceptions={max_exceptions}"
        status, body = await self._get(path)
        if status == 404:
            return ()
        if status != 200:
            raise self._unexpected_status(path, status, body)
        return parse_root_causes(body)

    async def _get(self, path: str) -> tuple[int, bytes]:
        """(status, body) of a GET; the body is capped unless the status is 200."""
        try:
            async with self._session.get(
                self._base + path,
                timeout=self._timeout,
                allow_redirects=False,
                headers=self._headers,
                ssl=self._ssl,
                server_hostname=self._server_name,
            ) as response:
                status = response.status
                if 300 <= status < 400:
                    raise FlinkError(
                        FailureKind.REDIRECT,
                        f"GET {path}: HTTP {status} redirect{_location(response)} (not followed)",
                        status=status,
                    )
                if status == 200:
                    return status, await self._read_capped(path, response)
                return status, await _read_error_body(response)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise self._classify(path, error) from error

    async def _read_capped(self, path: str, response: aiohttp.ClientResponse) -> bytes:
        limit = self._max_body_bytes
        declared = response.content_length
        if declared is not None and declared > limit:
            raise FlinkError(
                FailureKind.TOO_LARGE,
                f"GET {path}: Content-Length {declared} exceeds the {limit}-byte limit",
                status=response.status,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                # Leaving the response unread closes the connection: the rest is never read.
                raise FlinkError(
                    FailureKind.TOO_LARGE,
                    f"GET {path}: body exceeds the {limit}-byte limit",
                    status=response.status,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _unexpected_status(self, path: str, status: int, body: bytes) -> FlinkError:
        summary = self._redact(_flink_error_summary(body))
        return FlinkError(
            FailureKind.HTTP_STATUS,
            f"GET {path}: HTTP {status}" + (f": {summary}" if summary else ""),
            status=status,
        )

    def _classify(self, path: str, error: BaseException) -> FlinkError:
        kind = _failure_kind(error)
        if kind is FailureKind.TIMEOUT:
            text = f"no complete answer within {self._timeout_seconds:g} s"
        elif isinstance(error, aiohttp.ClientPayloadError):
            text = "the connection closed before the whole body arrived"
        elif kind is FailureKind.TLS:
            text = self._redact(_tls_problem(error))
        else:
            text = self._redact(str(error)) or type(error).__name__
        return FlinkError(kind, f"GET {path}: {text}")


_SSL_SOURCE_LOCATION: Final = re.compile(r"\s*\(_ssl\.c:\d+\)$")


def _tls_problem(error: BaseException) -> str:
    """What went wrong in a TLS handshake, without aiohttp's wrapping (which spends the
    detail's length on the connection key): ``TLS: certificate verify failed: ...``."""
    cause = getattr(error, "certificate_error", None) or getattr(error, "os_error", None)
    failure = cause if isinstance(cause, BaseException) else error
    verify_message = getattr(failure, "verify_message", None)
    if isinstance(failure, ssl.SSLCertVerificationError) and verify_message:
        return f"TLS: certificate verify failed: {verify_message}"
    if isinstance(failure, ssl.SSLError) and failure.strerror:
        return "TLS: " + _SSL_SOURCE_LOCATION.sub("", failure.strerror)
    return f"TLS: {failure}"


def _failure_kind(error: BaseException) -> FailureKind:
    # Order matters: TLS and timeout errors are also connection errors and OSErrors.
    if isinstance(error, aiohttp.ClientSSLError | ssl.SSLError | aiohttp.ServerFingerprintMismatch):
        return FailureKind.TLS
    if isinstance(error, TimeoutError):
        return FailureKind.TIMEOUT
    if isinstance(error, aiohttp.ClientConnectorError | ConnectionRefusedError):
        return FailureKind.REFUSED
    # Server disconnected, connection reset, body cut short, or not HTTP at all.
    return FailureKind.RESET


def _location(response: aiohttp.ClientResponse) -> str:
    # Where a redirect leads, said without its path or credentials.
    location = response.headers.get("Location")
    if not location:
        return ""
    try:
        target = URL(location)
        return f" to {target.origin()}" if target.absolute else " within the same host"
    except ValueError:
        return ""


async def _read_error_body(response: aiohttp.ClientResponse) -> bytes:
    """The start of an error answer, for its message; the status says what matters."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.content.iter_any():
            chunks.append(chunk)
            size += len(chunk)
            if size >= _ERROR_BODY_BYTES:
                break
    except (aiohttp.ClientError, OSError, TimeoutError):
        pass
    return b"".join(chunks)[:_ERROR_BODY_BYTES]
