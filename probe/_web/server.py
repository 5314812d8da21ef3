"""The daemon's HTTP server (aiohttp.web, in the probe loop's event loop).

``/metrics`` streams the per-Job series and the registry piece by piece (OpenMetrics when the
scraper asks for it, gzip when it accepts it); ``/probe?target=`` answers one target's series,
enrolling it first if it is new (the multi-target exporter pattern); ``/healthz`` and
``/readyz`` answer for orchestration; the Job API is read-only. The Job and event lists carry
the store-wide sequence number as ``metadata.resourceVersion``, and stream their changes from
one with ``?watch=true`` (`probe._web.watch`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import anyio
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from probe._cogs.errors import one_line
from probe._core.model import InvalidJobId, canonical_job_id
from probe._runtime.book import JobBook
from probe._runtime.catalog import JobCatalog
from probe._runtime.journal import Journal
from probe._runtime.scheduler import TargetHealth
from probe._store import StoreError
from probe._targets import Decision
from probe._version import __version__
from probe._web.metrics import JobSeriesRenderer, target_up
from probe._web.openapi import (
    EVENTS_PATH,
    JOB_PATH,
    JOBS_PATH,
    OPENAPI_PATH,
    PROBE_PATH,
    openapi_json,
)
from probe._web.queries import (
    BadParameter,
    Watch,
    continue_token,
    event_query,
    job_selector,
    watch_of,
)
from probe._web.watch import Select, Watches, event_changes, job_changes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

UNAUTHENTICATED_PATHS: Final = frozenset({"/healthz", "/readyz"})
"""Answered without credentials when ``server.web_config`` sets ``basic_auth_users``:
orchestration probes (a kubelet's) carry none, and the answers show health only."""


@dataclass(frozen=True, slots=True)
class Liveness:
    """What /healthz, /readyz and the systemd watchdog consult (set by the daemon)."""

    heartbeat: Callable[[], float]
    """monotonic time of the probe loop's last sign of life."""
    stale_after: Callable[[], float]
    """Seconds of silence after which the loop counts as stalled; asked at every check, so it
    follows a reload that changes the interval."""
    targets_probed: Callable[[], bool]
    leases_settled: Callable[[], bool] = lambda: True
    """This daemon knows which targets it holds: its last lease claim answered."""
    lease_error: Callable[[], str | None] = lambda: None
    """Why lease claims fail, while they do."""

    def silence(self) -> float:
        """Seconds since the probe loop's last sign of life."""
        return time.monotonic() - self.heartbeat()

    def stalled(self) -> bool:
        return self.silence() > self.stale_after()


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What ``GET /probe`` consults (set by the daemon)."""

    enroll: Callable[[Mapping[str, str]], Decision]
    """Decides a scrape from its query (`probe._runtime.targets.TargetSources.enroll`)."""
    first_round: Callable[[str], Awaitable[None]]
    """Returns once the named target's first round is in the book (the caller bounds it)."""
    health: Callable[[str], TargetHealth | None]
    """The named target's health, if this daemon probes it."""


def json_response(status: int, body: Any) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body, separators=(",", ":")),
        content_type="application/json",
    )


def error(status: int, message: str) -> web.Response:
    return json_response(status, {"error": {"code": status, "message": message}})


INDEX = """<!doctype html><html><head><title>flink-probe</title></head><body>
<h1>flink-probe {version}</h1><ul>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
<li><code>/probe?target=&lt;url&gt;</code>: one Flink cluster's series (multi-target pattern)</li>
<li><a href="/api/v1/namespaces/default/jobs">/api/v1/namespaces/default/jobs</a>: Job resources
(namespace <code>default</code>)</li>
<li><a href="/api/v1/namespaces/default/events">/api/v1/namespaces/default/events</a>: what
happened to them, and why</li>
<li><a href="/healthz">/healthz</a>: liveness</li>
<li><a href="/readyz">/readyz</a>: readiness</li>
<li><a href="/api/openapi.json">/api/openapi.json</a>: the API's OpenAPI description</li>
</ul></body></html>
"""


class Api:
    def __init__(
        self,
        book: JobBook,
        registry: CollectorRegistry,
        liveness: Liveness,
        job_series: JobSeriesRenderer,
        catalog: JobCatalog | None = None,
        enrollment: Enrollment | None = None,
        journal: Journal | None = None,
        max_watches: int = 100,
    ) -> None:
        """``catalog``: the Jobs the API serves (default: the book's); ``enrollment``: what
        ``/probe`` consults (None: it answers 404); ``journal``: the events and the changes
        (None: the event list and the watches answer 404); ``max_watches``: watches open at
        once."""
        self.job_series = job_series
        """Replaced by the daemon when a reload changes ``probe.metrics_retention``."""
        self.book = book
        self.catalog = catalog or JobCatalog(book)
        self.registry = registry
        self.liveness = liveness
        self.enrollment = enrollment
        self.journal = journal
        self.watches = None if journal is None else Watches(journal, max_watches)

    def app(self, middlewares: Iterable[Middleware] = ()) -> web.Application:
        # `middlewares` (authentication) run first: a request without credentials learns
        # nothing, not even which paths exist.
        app = web.Application(middlewares=[*middlewares, _json_errors])
        if self.watches is not None:
            # The server waits for open requests when it shuts down: a watch never ends alone.
            app.on_shutdown.append(self.watches.close)
        app.router.add_get("/", self.index)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get(PROBE_PATH, self.probe)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get(OPENAPI_PATH, self.openapi)
        app.router.add_get(JOBS_PATH, self.list_jobs)
        app.router.add_get(JOB_PATH, self.get_job)
        app.router.add_get(EVENTS_PATH, self.list_events)
        for path in (JOBS_PATH, JOB_PATH):
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                app.router.add_route(method, path, self.read_only)
        return app

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text=INDEX.format(version=__version__), content_type="text/html")

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        """Streamed piece by piece in the event loop: building a large body whole (or in a
        thread, fighting the loop for the GIL) costs memory and probe lag."""
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        # Level 1: metric text compresses well even at the cheapest level.
        compressor = (
            zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: gzip framing
            if "gzip" in request.headers.get("Accept-Encoding", "")
            else None
        )
        response = web.StreamResponse(
            headers={"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
        )
        if compressor is not None:
            response.headers["Content-Encoding"] = "gzip"
        await response.prepare(request)
        # The per-Job families first: OpenMetrics ends with the registry's "# EOF".
        pieces = itertools.chain(
            (piece.encode() for piece in self.job_series.chunks(openmetrics)),
            [encoder(self.registry)],
        )
        for piece in pieces:
            data = compressor.compress(piece) if compressor is not None else piece
            if data:
                await response.write(data)
            # A write returns without a turn of the loop while the socket takes it (and gzip
            # often has nothing to write yet): give the probe rounds their turn explicitly.
            await anyio.lowlevel.checkpoint()
        if compressor is not None:
            await response.write(compressor.flush())
        await response.write_eof()
        return response

    async def probe(self, request: web.Request) -> web.Response:
        """One target's series (the per-Job families and ``flink_probe_target_up``), from the
        cache; the first scrape of an allowed new URL enrolls it and waits for its first round,
        at most ``enrollment.first_wait``."""
        if self.enrollment is None:
            return error(404, "/probe is not served here")
        decision = self.enrollment.enroll(request.query)
        if decision.outcome == "refused" or decision.target is None:
            return error(decision.status, decision.message)
        name = decision.target.name
        if decision.outcome == "enrolled":
            with anyio.move_on_after(decision.wait) as waiting:
                await self.enrollment.first_round(name)
            if not waiting.cancelled_caught:
                # The round's values are shown once durable; a commit cut short would leave
                # them written but never shown.
                with anyio.CancelScope(shield=True):
                    await self.book.commit()
        records = await self.catalog.records()
        mine = [record for record in list(records.values()) if record.job.target == name]
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        # The per-Job families first: OpenMetrics ends with the encoder's "# EOF".
        series = "".join(self.job_series.chunks(openmetrics, records=mine))
        up = CollectorRegistry(auto_describe=False)
        up.register(_Families([target_up({name: self.enrollment.health(name)})]))
        return web.Response(
            body=series.encode() + encoder(up), headers={"Content-Type": content_type}
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(text=openapi_json(), content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        if self.liveness.stalled():
            silent = round(self.liveness.silence(), 1)
            return json_response(503, {"status": "stalled", "probeLoopSilentSeconds": silent})
        return json_response(200, {"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """200 with every check (all true), or 503 with the failing ones only."""
        checks = {
            "targetsProbed": self.liveness.targets_probed(),
            "storeWritable": self.book.health.ok,
            "leasesSettled": self.liveness.leases_settled(),
        }
        ready = all(checks.values())
        failing = {name: passed for name, passed in checks.items() if not passed}
        body: dict[str, Any] = {"ready": ready, "checks": checks if ready else failing}
        store_error = self.book.health.error or self.liveness.lease_error()
        if store_error:
            body["storeError"] = store_error
        return json_response(200 if ready else 503, body)

    async def list_jobs(self, request: web.Request) -> web.StreamResponse:
        """The namespace's Jobs (``?deploymentName=``, ``&state=``), or a watch of them."""
        try:
            selector = job_selector(request.match_info["namespace"], request.query)
            watch = watch_of(request.query)
        except BadParameter as exc:
            return error(400, str(exc))
        if watch is not None:
            return await self._watch(request, "Job", watch, job_changes(selector, watch.start))
        try:
            # Read first: a watch from it may repeat a change the list shows, never miss one.
            sequence = await self._sequence()
        except StoreError as exc:
            return _unavailable(exc)
        records = await self.catalog.records()
        items = [
            record.shown_job.to_wire()
            for record in list(records.values())
            if selector.admits(record.job)
        ]
        items.sort(key=lambda job: (job["metadata"]["createdAt"], job["metadata"]["id"]))
        return json_response(
            200, {"kind": "JobList", "metadata": {"resourceVersion": sequence}, "items": items}
        )

    async def list_events(self, request: web.Request) -> web.StreamResponse:
        """The namespace's events, newest first, a page at a time; or a watch of them."""
        if self.journal is None:
            return error(404, "events are not served here")
        try:
            query = event_query(request.match_info["namespace"], request.query)
            watch = watch_of(request.query)
        except BadParameter as exc:
            return error(400, str(exc))
        if watch is not None:
            return await self._watch(request, "Event", watch, event_changes(query))
        try:
            sequence = await self.journal.sequence()
            # The first page ends at that sequence number: what comes later, a watch from it
            # sends. One more than a page tells whether another follows.
            before = sequence + 1 if query.before is None else query.before
            page = dataclasses.replace(query, before=before, limit=query.limit + 1)
            events = await self.journal.events(page)
        except StoreError as exc:
            return _unavailable(exc)
        items = [event.to_wire() for event in events[: query.limit]]
        more = len(events) > query.limit
        token = continue_token(items[-1]["metadata"]["resourceVersion"]) if more else None
        return json_response(
            200,
            {
                "apiVersion": "v1",
                "kind": "EventList",
                "metadata": {"resourceVersion": sequence, "continue": token},
                "items": items,
            },
        )

    async def _sequence(self) -> int:
        """The store-wide sequence number of the last commit (this daemon's, without a
        journal)."""
        return self.book.sequence if self.journal is None else await self.journal.sequence()

    async def _watch(
        self, request: web.Request, kind: str, watch: Watch, select: Select
    ) -> web.StreamResponse:
        if self.watches is None:
            return error(404, "watches are not served here")
        if self.watches.full:
            return error(429, "server.max_watches watches are open: try again later")
        return await self.watches.serve(request, kind, watch, select)

    async def get_job(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        raw_id = request.match_info["jobId"]
        try:
            job_id = canonical_job_id(raw_id)
        except InvalidJobId:
            return error(404, f"job {raw_id!r} not found in namespace {namespace!r}")
        record = await self.catalog.get(job_id)
        if record is None or record.job.metadata.namespace != namespace:
            return error(404, f"job {job_id} not found in namespace {namespace!r}")
        return json_response(200, record.shown_job.to_wire())

    async def read_only(self, request: web.Request) -> web.Response:
        return error(405, "Job resources are managed by flink-probe alone: the API is read-only")


def _unavailable(exc: StoreError) -> web.Response:
    return error(503, f"the state store cannot be read: {one_line(str(exc))}")


class _Families(Collector):
    """Metric families made for one answer, as a registry's collector."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is JSON, including aiohttp's own 404 and 405."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error(exc.status, exc.reason)
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "GET")
        return response
