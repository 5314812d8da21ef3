"""The fault matrix: every way a Flink endpoint (or what sits in front of it) can misbehave,
one cluster per fault, all at once against one daemon.

tests/e2e/test_daemon.py covers hang, slow, 500, garbage, wrong types, oversized, reset and a
leader election; this file extends the matrix with faults at the byte level (served by
`RawFlink`, a FakeCluster behind raw asyncio streams) and more of the fake's own faults. For
every fault the daemon must: keep answering /healthz and /metrics; count the failed requests
by endpoint and reason; log `requests failing` once when the fault starts and `requests
recovered` once when it ends, not once per round; never lower a restart count; move no Job
to a final state (the fault lasts longer than `not_found_grace` probes); and recover by
itself once the fault ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from daemon_harness import (
    DaemonHandle,
    Metrics,
    daemon_config,
    dashed,
    flink_status_of,
    restarts_of,
    running_daemon,
    sampling,
    started_of,
    state_of,
    target,
    wait_until,
)
from tls_helpers import Authority, KeyPair, server_context

from probe.testing import ANY_ENDPOINT, Endpoint, FakeCluster, FakeFlinkServer, Fault, FaultKind

INTERVAL: Final = 0.5
GRACE: Final = 3
"""not_found_grace: every fault lasts for more faulty probes than this."""
TRICKLE_PAUSE: Final = 0.1
"""Slow faults send a byte (or a header line) this often: forever, measured in timeouts."""

# -- RawFlink: a fake cluster behind raw streams ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    endpoint: Endpoint
    jid: str | None
    query: Mapping[str, str]


def parse_request(head: bytes) -> Request | None:
    """The Flink endpoint a request head asks for (None for a path Flink does not serve)."""
    method, target_path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    path, _, query_string = target_path.partition("?")
    query = dict(part.partition("=")[::2] for part in query_string.split("&") if part)
    parts = path.strip("/").split("/")
    if method != "GET" or not parts or parts[0] != "jobs":
        return None
    if parts == ["jobs", "overview"]:
        return Request(Endpoint.OVERVIEW, None, query)
    if len(parts) == 2:
        return Request(Endpoint.DETAILS, parts[1], query)
    per_job = {Endpoint.STATUS, Endpoint.METRICS, Endpoint.EXCEPTIONS}
    if len(parts) == 3 and parts[2] in per_job:
        return Request(Endpoint(parts[2]), parts[1], query)
    return None


def http_answer(status: int, body: bytes, *headers: str) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}",
        "Content-Type: application/json; charset=UTF-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def json_bytes(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request to a faulty RawFlink, and what a healthy cluster would answer."""

    request: Request
    status: int
    document: Any
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


Respond = Callable[[Exchange], Awaitable[None]]


Handshake = ssl.SSLContext | Literal["plain", "self-signed"]


@dataclass(frozen=True, slots=True)
class Misbehaviour:
    """How a RawFlink misbehaves: `respond` answers the requests to `endpoints` (None: all),
    `handshake` replaces the TLS handshake of an https cluster ("plain": the port speaks
    plain HTTP; a context: the server shows that certificate; "self-signed": the test's
    self-signed one)."""

    respond: Respond | None = None
    endpoints: frozenset[Endpoint] | None = None
    handshake: Handshake | None = None

    def responder(self, endpoint: Endpoint) -> Respond | None:
        if self.endpoints is not None and endpoint not in self.endpoints:
            return None
        return self.respond


class RawFlink:
    """A FakeCluster served over raw asyncio streams, so that a fault can misbehave below
    HTTP: trickle bytes, speak another protocol, fail the TLS handshake. Every answer closes
    its connection, so a fault applies from the next request on and no pooled connection
    outlives a TLS fault. `tls`: the context of a healthy https cluster."""

    def __init__(self, cluster: FakeCluster, *, tls: ssl.SSLContext | None = None) -> None:
        self.cluster = cluster
        self.tls = tls
        self.fault: Misbehaviour | None = None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (again, on the same port once it had one)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening (connections are then refused) and end every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        fault = self.fault
        try:
            if self.tls is not None:
                handshake = fault.handshake if fault else None
                if handshake == "plain":
                    # What an HTTP server makes of a TLS ClientHello.
                    await reader.read(4096)
                    writer.write(http_answer(400, b"Bad Request"))
                    await writer.drain()
                    return
                context = handshake if isinstance(handshake, ssl.SSLContext) else self.tls
                await writer.start_tls(context)
            head = await reader.readuntil(b"\r\n\r\n")
            request = parse_request(head)
            if request is None:
                writer.write(http_answer(404, b'{"errors":["Not found."]}'))
                return
            self.cluster.note_request(request.endpoint, request.jid)
            status, document = self.cluster.answer(request.endpoint, request.jid, request.query)
            respond = fault.responder(request.endpoint) if fault else None
            if respond is None:
                writer.write(http_answer(status, json_bytes(document)))
            else:
                await respond(Exchange(request, status, document, writer))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client hung up (as it should on a timeout) or the handshake failed
        finally:
            writer.transport.abort()
            self._connections.discard(task)


# -- misbehaviours ---------------------------------------------------------------------------


async def slow_headers(exchange: Exchange) -> None:
    """The status line at once, then a header line now and then, never the end of them."""
    await exchange.send(b"HTTP/1.1 200 OK\r\n")
    for line in range(1000):
        await asyncio.sleep(TRICKLE_PAUSE)
        await exchange.send(f"X-Still-Thinking-{line}: yes\r\n".encode())


async def trickled_body(exchange: Exchange) -> None:
    """The headers at once, then the (healthy) body a byte at a time."""
    body = json_bytes(exchange.document) + b" " * 1000
    head, _, _ = http_answer(exchange.status, body).partition(b"\r\n\r\n")
    await exchange.send(head + b"\r\n\r\n")
    for index in range(len(body)):
        await asyncio.sleep(TRICKLE_PAUSE)
        await exchange.send(body[index : index + 1])


async def closed_at_once(exchange: Exchange) -> None:
    """The request is read, then the connection closes without a byte."""


async def not_http(exchange: Exchange) -> None:
    """Another service on Flink's port."""
    await exchange.send(b"SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n")


async def empty_200(exchange: Exchange) -> None:
    await exchange.send(http_answer(200, b""))


async def bad_gzip(exchange: Exchange) -> None:
    """A proxy that labels a plain body as gzip."""
    await exchange.send(
        http_answer(exchange.status, json_bytes(exchange.document), "Content-Encoding: gzip")
    )


async def redirect_elsewhere(exchange: Exchange) -> None:
    """A redirect to the same port of another host, 127.0.0.2 (where `sentinel_host` listens)."""
    port = exchange.writer.get_extra_info("sockname")[1]
    location = f"http://127.0.0.2:{port}/jobs/overview".encode()
    await exchange.send(
        b"HTTP/1.1 302 Found\r\nLocation: "
        + location
        + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )


def rewritten(transform: Callable[[Endpoint, Any], Any]) -> Respond:
    """The healthy answer, its JSON document changed by `transform(endpoint, document)`."""

    async def respond(exchange: Exchange) -> None:
        document = transform(exchange.request.endpoint, exchange.document)
        await exchange.send(http_answer(exchange.status, json_bytes(document)))

    return respond


def num_restarts(value: str) -> Respond:
    return rewritten(lambda _, doc: [{"id": "numRestarts", "value": value}] if doc else doc)


def overview_entries(change: Callable[[dict[str, Any]], dict[str, Any]]) -> Respond:
    return rewritten(lambda _, doc: {"jobs": [change(dict(entry)) for entry in doc["jobs"]]})


def without_start_time(entry: dict[str, Any]) -> dict[str, Any]:
    del entry["start-time"]
    return entry


def with_extra_fields(endpoint: Endpoint, document: Any) -> Any:
    """What a newer Flink might add: unknown keys everywhere, an unknown metric."""
    if endpoint is Endpoint.OVERVIEW:
        entries = [entry | {"new-in-flink-3": {"a": [1, 2]}} for entry in document["jobs"]]
        return {"jobs": entries, "cluster-id": "prod-eu-1", "next-page": None}
    if endpoint is Endpoint.METRICS:
        return [metric | {"unit": "count"} for metric in document] + [{"id": "x", "value": "1"}]
    return document


def hidden_and_state_42(endpoint: Endpoint, document: Any) -> Any:
    """The job missing from the overview, and its /jobs/:jid answer of the wrong type."""
    if endpoint is Endpoint.OVERVIEW:
        return {"jobs": []}
    if endpoint is Endpoint.DETAILS:
        return document | {"state": 42}
    return document


def self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pair = KeyPair(directory / "self-signed.pem", directory / "self-signed.key")
    pair.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return server_context(pair)


# -- the matrix ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One fault: on which server, what it does, and what the daemon must make of it.

    `failing` is the (endpoint:reason) the daemon counts and logs (None: not a fault at all);
    `status` the observedFlinkJobStatus while it lasts; `counts` whether a restart during the
    fault is counted before it ends."""

    fault: Fault | Misbehaviour | None
    failing: str | None
    status: str = "UNKNOWN"
    fault_endpoint: Endpoint | Literal["*"] = ANY_ENDPOINT
    https: bool = False
    counts: bool = False

    @property
    def target_down(self) -> bool:
        return self.failing is not None and self.failing.startswith("overview:")


def only(*endpoints: Endpoint) -> frozenset[Endpoint]:
    return frozenset(endpoints)


MATRIX: Final[dict[str, Row]] = {
    # No server at all (it stops listening while the daemon runs).
    "refused": Row(None, "overview:refused"),
    # Below HTTP.
    "closed-at-once": Row(Misbehaviour(closed_at_once), "overview:reset"),
    "not-http": Row(Misbehaviour(not_http), "overview:reset"),
    "slow-headers": Row(Misbehaviour(slow_headers), "overview:timeout"),
    "trickled-body": Row(Misbehaviour(trickled_body), "overview:timeout"),
    "bad-gzip": Row(Misbehaviour(bad_gzip), "overview:reset"),
    "tls-plain-server": Row(Misbehaviour(handshake="plain"), "overview:tls", https=True),
    "tls-self-signed": Row(Misbehaviour(handshake="self-signed"), "overview:tls", https=True),
    "redirect-elsewhere": Row(Misbehaviour(redirect_elsewhere), "overview:redirect"),
    # Pages that are not Flink's JSON.
    "html-502-page": Row(Fault(FaultKind.HTTP_502), "overview:http_status"),
    "html-200-login": Row(Fault(FaultKind.HTML, status=200), "overview:not_json"),
    "empty-200": Row(Misbehaviour(empty_200), "overview:not_json"),
    "truncated-json": Row(Fault(FaultKind.TRUNCATED), "overview:not_json"),
    "nested-json": Row(Fault(FaultKind.NESTED), "overview:not_json"),
    # JSON, but not of Flink's shape.
    "unknown-state": Row(
        Misbehaviour(overview_entries(lambda e: e | {"state": "EXPLODING"})), "overview:bad_shape"
    ),
    "missing-start-time": Row(
        Misbehaviour(overview_entries(without_start_time)), "overview:bad_shape"
    ),
    "details-state-42": Row(
        Misbehaviour(rewritten(hidden_and_state_42), only(Endpoint.OVERVIEW, Endpoint.DETAILS)),
        "details:bad_shape",
    ),
    "negative-count": Row(
        Misbehaviour(num_restarts("-1"), only(Endpoint.METRICS)),
        "metrics:bad_shape",
        status="RUNNING",
    ),
    "absurd-count": Row(
        Misbehaviour(num_restarts("1000000000000"), only(Endpoint.METRICS)),
        "metrics:bad_shape",
        status="RUNNING",
    ),
    "count-abc": Row(
        Fault(FaultKind.WRONG_TYPES), "metrics:bad_shape", "RUNNING", Endpoint.METRICS
    ),
    # Not a fault: what a newer Flink may add is ignored.
    "extra-fields": Row(
        Misbehaviour(rewritten(with_extra_fields)), None, status="RUNNING", counts=True
    ),
}


@dataclass
class Cluster:
    """One row's cluster, its server and its one job."""

    name: str
    row: Row
    cluster: FakeCluster
    jid: str
    server: RawFlink | FakeFlinkServer
    seen_restarts: list[int] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return dashed(self.jid)

    async def start_fault(self, self_signed: ssl.SSLContext) -> None:
        """Start the fault between two rounds (so that a round sees all of it or none of it),
        and restart the job: the truth moves on while the daemon cannot see it."""
        await after_a_round(self.cluster)
        fault = self.row.fault
        if isinstance(self.server, FakeFlinkServer):
            assert isinstance(fault, Fault)
            self.cluster.set_fault(self.row.fault_endpoint, fault)
        elif fault is None:
            await self.server.close()
        else:
            assert isinstance(fault, Misbehaviour)
            if fault.handshake == "self-signed":
                fault = Misbehaviour(handshake=self_signed)
            self.server.fault = fault
        self.cluster.restart(self.jid)

    async def end_fault(self) -> None:
        if isinstance(self.server, FakeFlinkServer):
            self.cluster.clear_fault(self.row.fault_endpoint)
        elif self.row.fault is None:
            await self.server.start()
        else:
            self.server.fault = None


async def after_a_round(cluster: FakeCluster) -> None:
    """Return as a round of the daemon asks for numRestarts, its last request of a round: the
    next round begins an interval later."""
    asked = cluster.requests(Endpoint.METRICS)

    async def next_round_asked() -> bool:
        return cluster.requests(Endpoint.METRICS) > asked

    await wait_until(next_round_asked, "a round to end")


@contextlib.asynccontextmanager
async def sentinel_host(port: int) -> AsyncIterator[list[str]]:
    """A server on 127.0.0.2:`port`, recording every connection made to it."""
    connections: list[str] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(str(writer.get_extra_info("peername")))
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.2", port)
    try:
        yield connections
    finally:
        server.close()


@contextlib.asynccontextmanager
async def clusters(tmp_path: Path) -> AsyncIterator[dict[str, Cluster]]:
    """A started server per row, each with one job that restarted twice."""
    authority = Authority.create(tmp_path, "flink")
    trusted = server_context(authority.issue("flink-server", server=True))
    made: dict[str, Cluster] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name, row in MATRIX.items():
            cluster = FakeCluster()
            jid = cluster.submit(name)
            cluster.restart(jid, n=2)
            server: RawFlink | FakeFlinkServer
            if isinstance(row.fault, Fault):
                server = await stack.enter_async_context(FakeFlinkServer(cluster))
            else:
                server = RawFlink(cluster, tls=trusted if row.https else None)
                await server.start()
                stack.push_async_callback(server.close)
            made[name] = Cluster(name, row, cluster, jid, server)
        yield made


def target_of(entry: Cluster, ca_file: Path) -> dict[str, object]:
    if entry.row.https:
        return target(entry.name, entry.server.url, tls={"ca_file": str(ca_file)})
    return target(entry.name, entry.server.url)


def errors_of(metrics: Metrics, name: str, failing: str) -> float:
    endpoint, reason = failing.split(":")
    return metrics.total(
        "flink_probe_request_errors_total", target=name, endpoint=endpoint, reason=reason
    )


def probed_since(moment: float) -> Callable[[dict[str, Any] | None], bool]:
    def probed(job: dict[str, Any] | None) -> bool:
        started = started_of(job)
        if started is None:
            return False
        last = datetime.datetime.fromisoformat(started["lastUpdateTime"])
        return last.timestamp() > moment

    return probed


async def test_every_fault_is_counted_logged_once_and_heals_by_itself(tmp_path: Path) -> None:
    problems: list[str] = []
    self_signed = self_signed_context(tmp_path)

    async with (
        clusters(tmp_path) as matrix,
        sentinel_host(matrix["redirect-elsewhere"].server.port) as redirected_to,
    ):
        config = daemon_config(
            tmp_path / "state.db",
            [target_of(entry, tmp_path / "flink-ca.pem") for entry in matrix.values()],
            interval=f"{INTERVAL}s",
            timeout=f"{INTERVAL}s",
            not_found_grace=GRACE,
            # Every round asks numRestarts, its last request: `after_a_round` waits for it.
            metrics_refresh="0s",
        )

        async def sample(daemon: DaemonHandle) -> None:
            """Every Job stays STARTED, no count goes down (API, metrics), the daemon answers."""
            healthz, scrape = await daemon.request("/healthz"), await daemon.request("/metrics")
            if (healthz.status, scrape.status) != (200, 200):
                problems.append(f"/healthz {healthz.status}, /metrics {scrape.status}")
                return
            metrics = Metrics.parse(scrape.text)
            for entry in matrix.values():
                job = await daemon.job(entry.job_id)
                if state_of(job) != "STARTED":
                    problems.append(f"{entry.name}: state {state_of(job)}")
                counts = (
                    restarts_of(job) or 0,
                    int(metrics.value("flink_probe_job_restarts_total", job_id=entry.job_id) or 0),
                )
                if entry.seen_restarts and min(counts) < entry.seen_restarts[-1]:
                    problems.append(f"{entry.name}: {entry.seen_restarts[-1]} -> {counts}")
                entry.seen_restarts.append(max(counts))

        async with running_daemon(config) as daemon:
            for entry in matrix.values():
                await daemon.wait_job(
                    entry.job_id,
                    lambda j: restarts_of(j) == 2 and flink_status_of(j) == "RUNNING",
                    "RUNNING with 2 restarts",
                )
            before = await daemon.metrics()

            with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]
            ) as logs:
                async with sampling(daemon, sample, every=0.02):
                    faults_began = time.time()
                    await asyncio.gather(
                        *(entry.start_fault(self_signed) for entry in matrix.values())
                    )

                    await faults_observed(daemon, matrix, before, faults_began)

                    for entry in matrix.values():
                        await entry.end_fault()
                    for entry in matrix.values():
                        await daemon.wait_job(
                            entry.job_id,
                            lambda j: restarts_of(j) == 3 and flink_status_of(j) == "RUNNING",
                            "recovery: RUNNING, 3 restarts",
                        )
                    await daemon.wait_metrics(
                        lambda m: all(
                            m.value("flink_probe_target_up", target=name) == 1 for name in matrix
                        ),
                        "every target up again",
                    )

    assert not problems, problems[:20]
    assert redirected_to == [], "a redirect was followed"
    assert_logged_once_per_episode(logs, matrix)


async def faults_observed(
    daemon: DaemonHandle, matrix: dict[str, Cluster], before: Metrics, began: float
) -> None:
    """Wait until every fault was counted for more than GRACE rounds, and check what the
    daemon shows meanwhile."""
    faulty = {name: e.row.failing for name, e in matrix.items() if e.row.failing is not None}

    async def counted() -> Metrics | None:
        metrics = await daemon.metrics()
        for name, failing in faulty.items():
            if errors_of(metrics, name, failing) - errors_of(before, name, failing) <= GRACE:
                return None
        return metrics

    metrics = await wait_until(counted, f"every fault counted in more than {GRACE} rounds")
    for name, entry in matrix.items():
        up = metrics.value("flink_probe_target_up", target=name)
        assert up == (0.0 if entry.row.target_down else 1.0), (name, up)
        job = await daemon.wait_job(
            entry.job_id, probed_since(began), "a probe during the fault", within=5
        )
        assert flink_status_of(job) == entry.row.status, (name, job)
        assert restarts_of(job) == (3 if entry.row.counts else 2), (name, job)
    assert (await daemon.request("/readyz")).status == 200


def assert_logged_once_per_episode(
    logs: Sequence[Mapping[str, Any]], matrix: dict[str, Cluster]
) -> None:
    for name, entry in matrix.items():
        failing = [e for e in logs if e["event"] == "requests failing" and e["target"] == name]
        recovered = [e for e in logs if e["event"] == "requests recovered" and e["target"] == name]
        if entry.row.failing is None:
            assert (failing, recovered) == ([], []), name
            continue
        assert [e["failing"] for e in failing] == [[entry.row.failing]], (name, failing)
        assert failing[0]["log_level"] == "warning"
        assert [e["previously"] for e in recovered] == [[entry.row.failing]], (name, recovered)


def flapping() -> Misbehaviour:
    """An overloaded cluster: every other overview is cut short, and numRestarts is broken."""
    overviews = 0

    async def respond(exchange: Exchange) -> None:
        nonlocal overviews
        if exchange.request.endpoint is Endpoint.OVERVIEW:
            overviews += 1
            if overviews % 2:
                await exchange.send(http_answer(200, b'{"jobs":['))
                return
            await exchange.send(http_answer(200, json_bytes(exchange.document)))
            return
        await exchange.send(http_answer(200, b'[{"id":"numRestarts","value":"-3"}]'))

    return Misbehaviour(respond)


async def test_a_fault_that_changes_kind_every_round_is_logged_once_per_kind(
    tmp_path: Path,
) -> None:
    """An episode lasts until a round without errors: a fault alternating between two kinds
    (the overview fails, then the next round numRestarts does) is one episode, logged once
    per kind, not once per round."""
    cluster = FakeCluster()
    jid = cluster.submit("orders")
    server = RawFlink(cluster)
    await server.start()
    config = daemon_config(
        tmp_path / "state.db", [target("flapping", server.url)], interval="300ms", timeout="300ms"
    )
    try:
        async with running_daemon(config) as daemon:
            await daemon.wait_state(dashed(jid), "STARTED", flink_status="RUNNING")
            with structlog.testing.capture_logs() as logs:
                await after_a_round(cluster)
                server.fault = flapping()
                await daemon.wait_metrics(
                    lambda m: (
                        m.total("flink_probe_request_errors_total", reason="not_json") >= 4
                        and m.total("flink_probe_request_errors_total", reason="bad_shape") >= 4
                    ),
                    "both kinds failing four times",
                )
                server.fault = None
                await daemon.wait_probed(dashed(jid))
    finally:
        await server.close()

    failing = [entry["failing"] for entry in logs if entry["event"] == "requests failing"]
    recovered = [entry["previously"] for entry in logs if entry["event"] == "requests recovered"]
    assert sorted(failing) == [["metrics:bad_shape"], ["overview:not_json"]]
    assert recovered == [["metrics:bad_shape", "overview:not_json"]]
