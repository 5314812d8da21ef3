"""A scriptable simulated Flink cluster: Flink 2.3's REST answers, lags and faults.

The daemon's end-to-end tests and `flink-probe demo` run against it. Bodies copy the shapes of
a real Flink 2.3.0's answers: the same keys, the same error bodies and statuses (404 for an
unknown job's details, 500 for its status, 200 `[]` for its metrics, 503 during a leader
election).

`FakeCluster` is the model (thread-safe: scripts may drive it from another thread than the
server's); `FakeFlinkServer` serves it on a real socket. Run a demo cluster with
`python -m probe.testing --port 8081`.

Caches are simulated by history: the cluster records a snapshot of its jobs at every change,
and an endpoint with a lag of L seconds answers from the snapshot that was current at
`now - L`, the stalest answer a real cache of that age could give. `/jobs/overview` lags by
`overview_lag` (it may still list a removed job, or miss a new one); `/jobs/:jid` lags by the
same for a job the JobManager knows, but a job it does not know is 404 at once and a job too
new for the snapshot is served fresh (Flink fetches a cache miss); numRestarts lags by
`metrics_lag` (`[]` until the job is in the snapshot). Status and exceptions are live.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import TracebackType
from typing import Any, Final, Literal, Self

from aiohttp import web

from probe._core.model import GLOBALLY_TERMINAL, FlinkJobStatus, is_jid

__all__ = [
    "ANY_ENDPOINT",
    "Endpoint",
    "FakeCluster",
    "FakeFlinkServer",
    "FakeJob",
    "Fault",
    "FaultKind",
    "serve_in_thread",
]

Clock = Callable[[], float]


class Endpoint(StrEnum):
    """The kinds of request the fake serves (and counts, and can fault)."""

    OVERVIEW = "overview"  # GET /jobs/overview
    DETAILS = "details"  # GET /jobs/:jid
    STATUS = "status"  # GET /jobs/:jid/status
    METRICS = "metrics"  # GET /jobs/:jid/metrics
    EXCEPTIONS = "exceptions"  # GET /jobs/:jid/exceptions


ANY_ENDPOINT: Final = "*"
EndpointSelector = Endpoint | Literal["*"]


class FaultKind(StrEnum):
    HANG = "hang"  # accept the request, never answer
    SLOW = "slow"  # answer normally after `Fault.seconds`
    HTTP_500 = "http_500"  # Flink's "Internal server error." body
    HTTP_502 = "http_502"  # a proxy's HTML page
    HTTP_503 = "http_503"  # Flink's leader-election body
    HTML = "html"  # an HTML page with `Fault.status` (a login page answers 200)
    GARBAGE = "garbage"  # bytes that are not JSON (nor UTF-8)
    TRUNCATED = "truncated"  # the normal body cut in half (Content-Length matches the cut)
    WRONG_TYPES = "wrong_types"  # JSON of the right outline with wrong types ("state": 42)
    OVERSIZED = "oversized"  # a body of `Fault.size` bytes, streamed
    RESET = "reset"  # the connection closed half-way through the body
    REDIRECT = "redirect"  # 302 to another host
    NESTED = "nested"  # JSON nested far deeper than any parser should follow


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    seconds: float = 1.0  # SLOW: delay before the answer
    status: int = 200  # HTML: the status of the page
    size: int = 8 * 1024 * 1024  # OVERSIZED: body bytes
    content_length: bool = False  # OVERSIZED: declare the size up front (else chunked)


@dataclass(slots=True)
class FakeJob:
    """A job as the simulated JobManager knows it now."""

    jid: str
    name: str
    state: FlinkJobStatus
    start_time: int  # epoch ms; a new JobManager process gives the job a new, larger one
    end_time: int = -1
    num_restarts: int = 0  # since submission in this JobManager process
    # Newest first, as Flink serves them; at most EXCEPTION_HISTORY_SIZE.
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    timestamps: dict[str, int] = field(default_factory=dict)  # latest entry into each state


# Flink's web.exception-history-size default.
EXCEPTION_HISTORY_SIZE: Final = 16
_STATES: Final = [s for s in FlinkJobStatus if s is not FlinkJobStatus.UNKNOWN]
_TASK_STATES: Final = (
    "CREATED",
    "INITIALIZING",
    "RECONCILING",
    "DEPLOYING",
    "CANCELED",
    "FAILED",
    "SCHEDULED",
    "RUNNING",
    "FINISHED",
    "CANCELING",
)
_LEADER_ELECTION: Final = (
    "Service temporarily unavailable due to an ongoing leader election. Please refresh."
)
_VERTEX_NAME: Final = "Source: fake-source -> fake-map -> fake-sink: Writer"
_NGINX_502: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_LOGIN_PAGE: Final = (
    b"<!DOCTYPE html><html><head><title>Sign in</title></head>"
    b"<body><form method='post'><input name='user'><input type='password'></form></body></html>"
)


class FakeCluster:
    """The jobs of one simulated Flink cluster, and how it misbehaves.

    Every method is thread-safe. Times come from `clock` (seconds since the epoch), so a test
    can drive lags deterministically.
    """

    def __init__(
        self, *, clock: Clock = time.time, overview_lag: float = 0.0, metrics_lag: float = 0.0
    ) -> None:
        self.clock = clock
        # How stale /jobs/overview and /jobs/:jid may be (Flink: web.refresh-interval).
        self.overview_lag = overview_lag
        # How stale numRestarts may be (Flink: metrics.fetcher.update-interval).
        self.metrics_lag = metrics_lag
        self._lock = threading.RLock()
        self._jobs: dict[str, FakeJob] = {}
        self._history_times: list[float] = [clock()]
        self._history: list[dict[str, FakeJob]] = [{}]
        self._faults: dict[EndpointSelector, Fault] = {}
        self._electing = False
        self._requests: Counter[tuple[Endpoint, str | None]] = Counter()

    # -- scripting ------------------------------------------------------------------------

    def submit(
        self, name: str, jid: str | None = None, state: FlinkJobStatus = FlinkJobStatus.RUNNING
    ) -> str:
        """A new job (INITIALIZING, then `state`, at once); returns its jid."""
        jid = jid or uuid.uuid4().hex
        if not is_jid(jid):
            raise ValueError(f"jid {jid!r} is not 32 lower-case hex digits")
        with self._lock:
            if jid in self._jobs:
                raise ValueError(f"job {jid} exists")
            now = self._now_ms()
            job = FakeJob(jid=jid, name=name, state=FlinkJobStatus.INITIALIZING, start_time=now)
            job.timestamps[FlinkJobStatus.INITIALIZING] = now
            self._jobs[jid] = job
            self._enter(job, state, now)
            self._record()
        return jid

    def set_state(self, jid: str, state: FlinkJobStatus) -> None:
        with self._lock:
            self._enter(self._job(jid), state, self._now_ms())
            self._record()

    def restart(self, jid: str, n: int = 1, message: str = "fakeflink: task failure") -> None:
        """`n` task failures the job recovered from: numRestarts += n, n exception entries."""
        with self._lock:
            job = self._job(jid)
            now = self._now_ms()
            for _ in range(n):
                job.num_restarts += 1
                self._add_exception(job, _task_failure(message, job.num_restarts, now))
            job.timestamps[FlinkJobStatus.RESTARTING] = now
            self._record()

    def fail(self, jid: str, message: str = "fakeflink: intentional failure") -> None:
        """The job fails for good; its exception history explains why, as Flink's does."""
        with self._lock:
            job = self._job(jid)
            now = self._now_ms()
            self._add_exception(job, _job_failure(message, job.num_restarts, now))
            self._enter(job, FlinkJobStatus.FAILED, now)
            self._record()

    def finish(self, jid: str) -> None:
        self.set_state(jid, FlinkJobStatus.FINISHED)

    def cancel(self, jid: str, slow: bool = False) -> None:
        """CANCELLING then CANCELED; `slow` stops at CANCELLING until `cancel` is called again."""
        with self._lock:
            job = self._job(jid)
            now = self._now_ms()
            self._enter(job, FlinkJobStatus.CANCELLING, now)
            if not slow:
                self._enter(job, FlinkJobStatus.CANCELED, now)
            self._record()

    def remove(self, jid: str) -> None:
        """The job is gone (a JobManager without HA restarted): 404 from then on."""
        with self._lock:
            self._job(jid)
            del self._jobs[jid]
            self._record()

    def jobmanager_restart(self, keep_jobs: bool = True) -> None:
        """A new JobManager process takes over.

        With HA (`keep_jobs`), every job that was not globally terminal is recovered as
        Flink 2.3 recovers it: same jid, a new larger start-time, RUNNING, numRestarts back
        to 0 and an empty exception history; terminal jobs are not recovered. Without HA,
        every job is gone.
        """
        with self._lock:
            now = self._now_ms()
            recovered: dict[str, FakeJob] = {}
            if keep_jobs:
                for jid, old in self._jobs.items():
                    if old.state in GLOBALLY_TERMINAL:
                        continue
                    start = max(now, old.start_time + 1)
                    job = FakeJob(
                        jid=jid,
                        name=old.name,
                        state=FlinkJobStatus.INITIALIZING,
                        start_time=start,
                        timestamps={FlinkJobStatus.INITIALIZING: start},
                    )
                    self._enter(job, FlinkJobStatus.RUNNING, start)
                    recovered[jid] = job
            self._jobs = recovered
            self._record()

    def election(self, active: bool) -> None:
        """While a leader is elected, every endpoint answers 503."""
        with self._lock:
            self._electing = active

    def set_fault(self, endpoint: EndpointSelector, fault: Fault | FaultKind) -> None:
        """Make `endpoint` (or every endpoint: "*") misbehave until `clear_fault`."""
        with self._lock:
            self._faults[_selector(endpoint)] = (
                fault if isinstance(fault, Fault) else Fault(kind=fault)
            )

    def clear_fault(self, endpoint: EndpointSelector) -> None:
        with self._lock:
            self._faults.pop(_selector(endpoint), None)

    # -- inspection -----------------------------------------------------------------------

    def job(self, jid: str) -> FakeJob:
        """A copy of the job as the JobManager knows it now."""
        with self._lock:
            return _copy(self._job(jid))

    @property
    def electing(self) -> bool:
        with self._lock:
            return self._electing

    @property
    def jids(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    def requests(self, endpoint: Endpoint | None = None, jid: str | None = None) -> int:
        """How many requests were served, for one endpoint and/or one job, or all of them."""
        with self._lock:
            return sum(
                count
                for (counted_endpoint, counted_jid), count in self._requests.items()
                if endpoint in (None, counted_endpoint) and jid in (None, counted_jid)
            )

    # -- serving (used by FakeFlinkServer) ------------------------------------------------

    def note_request(self, endpoint: Endpoint, jid: str | None) -> tuple[Fault | None, bool]:
        """Count a request; returns the fault to apply and whether a leader is being elected."""
        with self._lock:
            self._requests[(endpoint, jid)] += 1
            fault = self._faults.get(endpoint) or self._faults.get(ANY_ENDPOINT)
            return fault, self._electing

    def answer(self, endpoint: Endpoint, jid: str | None, query: Mapping[str, str]) -> _Answer:
        """What a healthy Flink 2.3 would answer now (caches included)."""
        with self._lock:
            now = self._now_ms()
            if endpoint is Endpoint.OVERVIEW:
                jobs = sorted(self._view(self.overview_lag).values(), key=lambda j: -j.start_time)
                return 200, {"jobs": [_overview_entry(job, now) for job in jobs]}
            assert jid is not None
            if not is_jid(jid):
                return 400, _bad_job_id(jid)
            current = self._jobs.get(jid)
            if endpoint is Endpoint.STATUS:
                if current is None:
                    return 500, _status_not_found(jid)
                return 200, {"status": current.state.value}
            if endpoint is Endpoint.METRICS:
                return 200, self._metrics(jid, current, query.get("get"))
            if current is None:
                return 404, _job_not_found(jid)
            if endpoint is Endpoint.DETAILS:
                # A job the JobManager knows is in the cache, or fetched into it on a miss.
                cached = self._view(self.overview_lag).get(jid, current)
                return 200, _job_details(cached, now)
            limit = _int_or(query.get("maxExceptions"), EXCEPTION_HISTORY_SIZE)
            entries = current.exceptions[: max(limit, 0)]
            return 200, {"exceptionHistory": {"entries": entries, "truncated": False}}

    # -- internals ------------------------------------------------------------------------

    def _metrics(
        self, jid: str, current: FakeJob | None, names: str | None
    ) -> list[dict[str, str]]:
        # An unknown job, or one the metric fetcher has not seen yet: 200 [].
        fetched = self._view(self.metrics_lag).get(jid) if current is not None else None
        if fetched is None:
            return []
        if names is None:
            return [{"id": "numRestarts"}]
        if "numRestarts" not in names.split(","):
            return []
        return [{"id": "numRestarts", "value": str(fetched.num_restarts)}]

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _job(self, jid: str) -> FakeJob:
        try:
            return self._jobs[jid]
        except KeyError:
            raise KeyError(f"no job {jid}") from None

    def _enter(self, job: FakeJob, state: FlinkJobStatus, now: int) -> None:
        if state is FlinkJobStatus.UNKNOWN:
            raise ValueError("UNKNOWN is not a Flink job status")
        job.state = state
        job.timestamps[state] = now
        job.end_time = now if state in GLOBALLY_TERMINAL else -1

    def _add_exception(self, job: FakeJob, entry: dict[str, Any]) -> None:
        job.exceptions.insert(0, entry)
        del job.exceptions[EXCEPTION_HISTORY_SIZE:]

    def _record(self) -> None:
        """Snapshot the jobs (for lagged answers) and forget what no lag can reach."""
        now = max(self.clock(), self._history_times[-1])
        self._history_times.append(now)
        self._history.append({jid: _copy(job) for jid, job in self._jobs.items()})
        horizon = now - max(self.overview_lag, self.metrics_lag)
        # Keep the newest snapshot at or before the horizon: it answers for the horizon.
        drop = bisect.bisect_right(self._history_times, horizon) - 1
        if drop > 0:
            del self._history_times[:drop]
            del self._history[:drop]

    def _view(self, lag: float) -> Mapping[str, FakeJob]:
        """The jobs as they were `lag` seconds ago."""
        if lag <= 0:
            return self._jobs
        index = bisect.bisect_right(self._history_times, self.clock() - lag) - 1
        return self._history[max(index, 0)]


_Answer = tuple[int, Any]


def _selector(endpoint: EndpointSelector) -> EndpointSelector:
    return ANY_ENDPOINT if endpoint == ANY_ENDPOINT else Endpoint(endpoint)


def _copy(job: FakeJob) -> FakeJob:
    return replace(job, exceptions=list(job.exceptions), timestamps=dict(job.timestamps))


def _int_or(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


# -- bodies, in the shapes of Flink 2.3.0 -------------------------------------------------


def _duration(job: FakeJob, now: int) -> int:
    return (job.end_time if job.end_time >= 0 else now) - job.start_time


def _task_state(job: FakeJob) -> str | None:
    """The state of the job's one task (None while the job is INITIALIZING: no tasks yet)."""
    return {
        FlinkJobStatus.RUNNING: "RUNNING",
        FlinkJobStatus.FINISHED: "FINISHED",
        FlinkJobStatus.CANCELED: "CANCELED",
        FlinkJobStatus.CANCELLING: "CANCELING",
        FlinkJobStatus.FAILED: "FAILED",
        FlinkJobStatus.FAILING: "FAILED",
        FlinkJobStatus.RESTARTING: "FAILED",
        FlinkJobStatus.CREATED: "CREATED",
        FlinkJobStatus.RECONCILING: "RECONCILING",
    }.get(job.state)


def _status_counts(job: FakeJob) -> dict[str, int]:
    """Tasks per state, as `/jobs/:jid` keys them."""
    counts = dict.fromkeys(_TASK_STATES, 0)
    task_state = _task_state(job)
    if task_state is not None:
        counts[task_state] = 1
    return counts


def _task_counts(job: FakeJob) -> dict[str, int]:
    """Tasks per state, as `/jobs/overview` keys them."""
    counts = {state.lower(): count for state, count in _status_counts(job).items()}
    return counts | {"total": sum(counts.values())}


def _overview_entry(job: FakeJob, now: int) -> dict[str, Any]:
    initializing = job.state is FlinkJobStatus.INITIALIZING
    return {
        "jid": job.jid,
        "name": job.name,
        "jobType": "STREAMING",
        "schedulerType": None if initializing else "Default",
        "start-time": job.start_time,
        "end-time": job.end_time,
        "duration": _duration(job, now),
        "state": job.state.value,
        "last-modification": (
            0 if initializing else max(job.timestamps.values(), default=job.start_time)
        ),
        "tasks": _task_counts(job),
        "pending-operators": 0,
    }


def _job_details(job: FakeJob, now: int) -> dict[str, Any]:
    initializing = job.state is FlinkJobStatus.INITIALIZING
    status_counts = _status_counts(job)
    vertex_id = job.jid[::-1]
    vertices = [
        {
            "id": vertex_id,
            "slotSharingGroupId": job.jid[16:] + job.jid[:16],
            "name": _VERTEX_NAME,
            "maxParallelism": 128,
            "parallelism": 1,
            "status": _task_state(job) or "CREATED",
            "start-time": job.start_time,
            "end-time": job.end_time,
            "duration": _duration(job, now),
            "tasks": status_counts,
            "metrics": {
                "read-bytes": 0,
                "read-bytes-complete": False,
                "write-bytes": 0,
                "write-bytes-complete": False,
                "read-records": 0,
                "read-records-complete": False,
                "write-records": 0,
                "write-records-complete": False,
                "accumulated-backpressured-time": 0,
                "accumulated-idle-time": 0,
                "accumulated-busy-time": 0.0,
            },
        }
    ]
    return {
        "jid": job.jid,
        "application-id": None if initializing else job.jid,
        "name": job.name,
        "isStoppable": False,
        "state": job.state.value,
        "job-type": "STREAMING",
        "schedulerType": None if initializing else "Default",
        "start-time": job.start_time,
        "end-time": job.end_time,
        "duration": _duration(job, now),
        "maxParallelism": -1,
        "now": now,
        "timestamps": {state.value: job.timestamps.get(state, 0) for state in _STATES},
        "vertices": [] if initializing else vertices,
        "status-counts": status_counts,
        "plan": (
            {"jid": "", "name": "", "type": "", "nodes": []}
            if initializing
            else {
                "jid": job.jid,
                "name": job.name,
                "type": "STREAMING",
                "nodes": [
                    {
                        "id": vertex_id,
                        "operator": "",
                        "parallelism": 1,
                        "operator_strategy": "",
                        "description": _VERTEX_NAME,
                        "optimizer_properties": {},
                    }
                ],
            }
        ),
        "pending-operators": 0,
    }


_TRACE_TAIL: Final = (
    "\tat org.apache.flink.streaming.api.operators.StreamMap.processElement(StreamMap.java:37)\n"
    "\tat org.apache.flink.streaming.runtime.tasks.StreamTask.invoke(StreamTask.java:1038)\n"
)


def _task_failure(message: str, execution: int, now: int) -> dict[str, Any]:
    return {
        "exceptionName": "java.lang.RuntimeException",
        "stacktrace": f"java.lang.RuntimeException: {message}\n"
        "\tat fakeflink.FakeMap.map(FakeMap.java:42)\n" + _TRACE_TAIL,
        "timestamp": now,
        "failureLabels": {},
        "taskName": f"{_VERTEX_NAME} (1/1) - execution #{execution}",
        "endpoint": "localhost:40000",
        "taskManagerId": "127.0.0.1:40000-fake01",
    }


def _job_failure(message: str, execution: int, now: int) -> dict[str, Any]:
    cause = _task_failure(message, execution, now)
    return {
        "exceptionName": "org.apache.flink.runtime.JobException",
        "stacktrace": "org.apache.flink.runtime.JobException: Recovery is suppressed by"
        " NoRestartBackoffTimeStrategy\n"
        "\tat org.apache.flink.runtime.executiongraph.failover.ExecutionFailureHandler"
        ".handleFailure(ExecutionFailureHandler.java:213)\n"
        f"Caused by: {cause['stacktrace']}\t... 3 more\n",
        "timestamp": now,
        "failureLabels": {},
        "concurrentExceptions": [cause],
    }


def _java_trace(header: str) -> str:
    return (
        f"{header}\n\tat org.apache.flink.runtime.rest.handler.AbstractHandler"
        ".respondAsLeader(AbstractHandler.java:188)\n"
    )


def _job_not_found(jid: str) -> dict[str, Any]:
    return {
        "errors": [
            _java_trace(f"org.apache.flink.runtime.rest.NotFoundException: Job {jid} not found")
        ]
    }


def _status_not_found(jid: str) -> dict[str, Any]:
    return {
        "errors": [
            "Internal server error.",
            "<Exception on server side:\n"
            + _java_trace(
                "org.apache.flink.runtime.messages.FlinkJobNotFoundException:"
                f" Could not find Flink job ({jid})"
            )
            + "\nEnd of exception on server side>",
        ]
    }


def _bad_job_id(value: str) -> dict[str, Any]:
    return {
        "errors": [
            _java_trace(
                "org.apache.flink.runtime.rest.handler.RestHandlerException: Bad request, could not"
                f' parse parameters: Cannot resolve path parameter (jobid) from value "{value}".'
            )
        ]
    }


def _internal_error() -> dict[str, Any]:
    return {
        "errors": [
            "Internal server error.",
            "<Exception on server side:\n"
            + _java_trace("java.lang.RuntimeException: fakeflink: injected fault")
            + "\nEnd of exception on server side>",
        ]
    }


def _wrong_types(endpoint: Endpoint, jid: str | None, now: int) -> Any:
    """The endpoint's outline with wrongly typed values (what a broken proxy or version sends)."""
    some_jid = jid if jid and is_jid(jid) else "0" * 32
    if endpoint is Endpoint.OVERVIEW:
        entry = _overview_entry(FakeJob(some_jid, "wrong", FlinkJobStatus.RUNNING, now), now)
        return {"jobs": [entry | {"state": 42}]}
    if endpoint is Endpoint.DETAILS:
        details = _job_details(FakeJob(some_jid, "wrong", FlinkJobStatus.RUNNING, now), now)
        return details | {"start-time": "x"}
    if endpoint is Endpoint.STATUS:
        return {"status": 42}
    if endpoint is Endpoint.METRICS:
        return [{"id": "numRestarts", "value": "abc"}]
    return {"exceptionHistory": {"entries": "x", "truncated": "no"}}


# -- the HTTP server ----------------------------------------------------------------------


def _json_bytes(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _json_response(status: int, document: Any) -> web.Response:
    return web.Response(status=status, body=_json_bytes(document), content_type="application/json")


class FakeFlinkServer:
    """Serves a FakeCluster on a real socket: `async with FakeFlinkServer(cluster) as s:`."""

    def __init__(self, cluster: FakeCluster, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.cluster = cluster
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        # Set on close: hanging and slow answers end, so shutdown does not wait for them.
        self._closing = asyncio.Event()

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("the server is not started")
        address: Sequence[Any] = self._runner.addresses[0]
        return int(address[1])

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:40123 (no trailing slash)."""
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/jobs/overview", self._overview)
        app.router.add_get("/jobs/{jid}", self._per_job(Endpoint.DETAILS))
        app.router.add_get("/jobs/{jid}/status", self._per_job(Endpoint.STATUS))
        app.router.add_get("/jobs/{jid}/metrics", self._per_job(Endpoint.METRICS))
        app.router.add_get("/jobs/{jid}/exceptions", self._per_job(Endpoint.EXCEPTIONS))
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._closing.clear()
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, Endpoint.OVERVIEW, None)

    def _per_job(
        self, endpoint: Endpoint
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, endpoint, request.match_info["jid"])

        return handler

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        if self.cluster.electing:
            return _json_response(503, {"errors": [_LEADER_ELECTION]})
        return _json_response(404, {"errors": [f"Unable to load requested file {request.path}."]})

    async def _serve(
        self, request: web.Request, endpoint: Endpoint, jid: str | None
    ) -> web.StreamResponse:
        fault, electing = self.cluster.note_request(endpoint, jid)
        if fault is not None:
            faulty = await self._fault(request, fault, endpoint, jid)
            if faulty is not None:
                return faulty
        if electing:
            return _json_response(503, {"errors": [_LEADER_ELECTION]})
        status, document = self.cluster.answer(endpoint, jid, request.query)
        return _json_response(status, document)

    async def _fault(
        self, request: web.Request, fault: Fault, endpoint: Endpoint, jid: str | None
    ) -> web.StreamResponse | None:
        """The faulty answer, or None to answer normally (after a SLOW delay)."""
        kind = fault.kind
        if kind is FaultKind.HANG:
            await self._closing.wait()
            _abort(request)
            return web.Response(status=503)
        if kind is FaultKind.SLOW:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=fault.seconds)
            return None
        if kind is FaultKind.HTTP_500:
            return _json_response(500, _internal_error())
        if kind is FaultKind.HTTP_502:
            return web.Response(status=502, body=_NGINX_502, content_type="text/html")
        if kind is FaultKind.HTTP_503:
            return _json_response(503, {"errors": [_LEADER_ELECTION]})
        if kind is FaultKind.HTML:
            return web.Response(status=fault.status, body=_LOGIN_PAGE, content_type="text/html")
        if kind is FaultKind.GARBAGE:
            return web.Response(
                body=b"\xff\xfe\x00garbage{[<not json>", content_type="application/json"
            )
        if kind is FaultKind.NESTED:
            depth = 100_000
            return web.Response(body=b"[" * depth + b"]" * depth, content_type="application/json")
        if kind is FaultKind.REDIRECT:
            raise web.HTTPFound("http://127.0.0.2:9/elsewhere" + request.path_qs)
        if kind is FaultKind.WRONG_TYPES:
            now = int(self.cluster.clock() * 1000)
            return _json_response(200, _wrong_types(endpoint, jid, now))
        if kind is FaultKind.OVERSIZED:
            return await self._oversized(request, fault)
        status, document = self.cluster.answer(endpoint, jid, request.query)
        body = _json_bytes(document)
        if kind is FaultKind.TRUNCATED:
            return web.Response(
                status=status, body=body[: len(body) // 2], content_type="application/json"
            )
        # RESET: promise the whole body, send half of it, hang up.
        response = web.StreamResponse(status=status)
        response.content_type = "application/json"
        response.content_length = max(len(body), 2)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        _abort(request)
        return response

    async def _oversized(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        if fault.content_length:
            response.content_length = fault.size
        await response.prepare(request)
        # Valid JSON if read to the end: {"jobs":[<spaces>]}.
        head, tail = b'{"jobs":[', b"]}"
        chunk = b" " * 65536
        remaining = fault.size - len(head) - len(tail)
        try:
            await response.write(head)
            while remaining > 0:
                await response.write(chunk[: min(remaining, len(chunk))])
                remaining -= len(chunk)
            await response.write(tail)
        except ConnectionError:
            # The client stopped reading (as it should, past its limit).
            pass
        return response


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


@contextlib.contextmanager
def serve_in_thread(
    cluster: FakeCluster, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[FakeFlinkServer]:
    """Serve `cluster` from a thread with its own event loop (for synchronous tests)."""
    loop = asyncio.new_event_loop()
    server = FakeFlinkServer(cluster, host=host, port=port)
    started = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as error:  # handed to the caller's thread
            failures.append(error)
            started.set()
            loop.close()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.close())
        loop.close()

    thread = threading.Thread(target=run, name="fakeflink", daemon=True)
    thread.start()
    started.wait()
    if failures:
        thread.join()
        raise failures[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
