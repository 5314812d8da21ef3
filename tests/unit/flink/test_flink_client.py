"""FlinkClient: what each kind of failure becomes, and the requests it makes."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import aioresponses
from yarl import URL

from probe._core.model import FlinkJobStatus
from probe._flink.client import FailureKind, FlinkClient, FlinkError, OverviewEntry
from probe.testing import Endpoint, FakeCluster, FakeFlinkServer, Fault, FaultKind

BASE = "http://flink.example:8081"
JID = "018212e45da3a0cce413edc0a12d63c1"
OVERVIEW = f"{BASE}/jobs/overview"
DETAILS = f"{BASE}/jobs/{JID}"
METRICS = f"{BASE}/jobs/{JID}/metrics?get=numRestarts"
EXCEPTIONS = f"{BASE}/jobs/{JID}/exceptions"
ENTRY = {"jid": JID, "name": "orders", "state": "RUNNING", "start-time": 1795876276607}
KEY = ConnectionKey("flink.example", 8081, False, True, None, None, None, None)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class _MockedResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required `stream_writer` (aioresponses#289)."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class _Mock(aioresponses):
    def add(self, url: Any, method: str = "GET", *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _MockedResponse)
        super().add(url, method, *args, **kwargs)


@pytest.fixture
def mocked() -> Any:
    with _Mock() as mock:
        yield mock


@pytest.fixture
def client(session: aiohttp.ClientSession) -> FlinkClient:
    return FlinkClient(session, BASE, timeout=2.0, max_body_bytes=1024)


async def wait_until(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    async with asyncio.timeout(deadline):
        while not condition():  # noqa: ASYNC110 - nothing to wait on but the condition
            await asyncio.sleep(0.01)


async def failure(call: Awaitable[object]) -> FlinkError:
    with pytest.raises(FlinkError) as caught:
        await call
    assert "\n" not in str(caught.value)
    return caught.value


# -- answers ----------------------------------------------------------------------------


async def test_overview(mocked: Any, client: FlinkClient) -> None:
    mocked.get(OVERVIEW, payload={"jobs": [ENTRY]})
    assert await client.overview() == [
        OverviewEntry(JID, "orders", FlinkJobStatus.RUNNING, 1795876276607)
    ]


async def test_job_details_and_404(mocked: Any, client: FlinkClient) -> None:
    mocked.get(DETAILS, payload=ENTRY)
    mocked.get(DETAILS, status=404, payload={"errors": [f"NotFoundException: Job {JID} not found"]})
    details = await client.job_details(JID)
    assert details is not None
    assert details.state is FlinkJobStatus.RUNNING
    assert await client.job_details(JID) is None


async def test_num_restarts(mocked: Any, client: FlinkClient) -> None:
    mocked.get(METRICS, payload=[{"id": "numRestarts", "value": "3"}])
    mocked.get(METRICS, payload=[])
    assert await client.num_restarts(JID) == 3
    assert await client.num_restarts(JID) is None


async def test_newest_exception_and_404(mocked: Any, client: FlinkClient) -> None:
    history = {"exceptionHistory": {"entries": [{"stacktrace": "a.B: boom\n\tat x"}]}}
    mocked.get(EXCEPTIONS, payload=history)
    mocked.get(EXCEPTIONS, status=404, payload={"errors": ["not found"]})
    assert await client.newest_exception(JID) == "a.B: boom"
    assert await client.newest_exception(JID) is None


async def test_every_request_has_a_timeout_no_redirects_and_the_headers(
    mocked: Any, session: aiohttp.ClientSession
) -> None:
    client = FlinkClient(session, BASE, timeout=1.5, headers={"Authorization": "Bearer t0k3n"})
    mocked.get(OVERVIEW, payload={"jobs": []})
    await client.overview()
    ((request,),) = mocked.requests.values()
    assert request.kwargs["allow_redirects"] is False
    assert request.kwargs["timeout"] == aiohttp.ClientTimeout(total=1.5)
    assert request.kwargs["headers"] == {"Authorization": "Bearer t0k3n"}


@pytest.mark.parametrize(
    "base",
    ["http://proxy.example/flink/", "http://proxy.example/flink", "http://proxy.example/flink//"],
)
async def test_path_prefix(mocked: Any, session: aiohttp.ClientSession, base: str) -> None:
    client = FlinkClient(session, base, timeout=1.0)
    mocked.get("http://proxy.example/flink/jobs/overview", payload={"jobs": []})
    mocked.get(f"http://proxy.example/flink/jobs/{JID}/metrics?get=numRestarts", payload=[])
    assert await client.overview() == []
    assert await client.num_restarts(JID) is None


@pytest.mark.parametrize(
    "base", ["ftp://flink.example", "flink.example:8081", "http://", "http://h/?a=1", "http://h/#x"]
)
def test_base_url_must_be_http_without_query(session: aiohttp.ClientSession, base: str) -> None:
    with pytest.raises(ValueError, match="Flink URL"):
        FlinkClient(session, base, timeout=1.0)


@pytest.mark.parametrize("jid", ["", "0" * 31, JID.upper(), "../../jobs/overview" + "0" * 13])
async def test_job_ids_are_checked_before_any_request(client: FlinkClient, jid: str) -> None:
    with pytest.raises(ValueError, match="32 lower-case hex"):
        await client.job_details(jid)


# -- failures, classified ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")), "refused"),
        (aiohttp.ClientConnectorDNSError(KEY, OSError(-2, "Name or service not known")), "refused"),
        (ConnectionRefusedError(111, "Connection refused"), "refused"),
        (TimeoutError(), "timeout"),
        (aiohttp.ServerTimeoutError("read timeout"), "timeout"),
        (aiohttp.ConnectionTimeoutError("connect timeout"), "timeout"),
        (aiohttp.ServerDisconnectedError(), "reset"),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), "reset"),
        (ConnectionResetError(104, "Connection reset by peer"), "reset"),
        (aiohttp.ClientPayloadError("Response payload is not completed"), "reset"),
        (
            aiohttp.ClientConnectorCertificateError(KEY, ssl.SSLCertVerificationError(1, "bad")),
            "tls",
        ),
        (aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError(1, "wrong version number")), "tls"),
        (ssl.SSLError(1, "handshake failure"), "tls"),
    ],
)
async def test_exceptions_are_classified(
    mocked: Any, client: FlinkClient, error: Exception, kind: str
) -> None:
    mocked.get(OVERVIEW, exception=error)
    raised = await failure(client.overview())
    assert raised.kind == kind
    assert raised.status is None
    assert "/jobs/overview" in raised.detail


@pytest.mark.parametrize(
    ("call", "url"),
    [
        (lambda c: c.overview(), OVERVIEW),
        (lambda c: c.job_details(JID), DETAILS),
        (lambda c: c.num_restarts(JID), METRICS),
        (lambda c: c.newest_exception(JID), EXCEPTIONS),
    ],
)
@pytest.mark.parametrize("status", [500, 502, 503, 401, 400])
async def test_unexpected_status(
    mocked: Any,
    client: FlinkClient,
    call: Callable[[FlinkClient], Awaitable[object]],
    url: str,
    status: int,
) -> None:
    mocked.get(url, status=status, payload={"errors": ["Internal server error.", "<Exception\nx"]})
    raised = await failure(call(client))
    assert (raised.kind, raised.status) == (FailureKind.HTTP_STATUS, status)
    assert f"HTTP {status}" in str(raised)


async def test_overview_404_is_a_status_failure(mocked: Any, client: FlinkClient) -> None:
    mocked.get(OVERVIEW, status=404, body="<html>not here</html>", content_type="text/html")
    raised = await failure(client.overview())
    assert (raised.kind, raised.status) == (FailureKind.HTTP_STATUS, 404)


async def test_flinks_error_message_is_in_the_detail(mocked: Any, client: FlinkClient) -> None:
    election = "Service temporarily unavailable due to an ongoing leader election. Please refresh."
    mocked.get(OVERVIEW, status=503, payload={"errors": [election]})
    raised = await failure(client.overview())
    assert election in raised.detail


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed(mocked: Any, client: FlinkClient, status: int) -> None:
    mocked.get(OVERVIEW, status=status, headers={"Location": "https://sso.example/login?x=1"})
    raised = await failure(client.overview())
    assert (raised.kind, raised.status) == (FailureKind.REDIRECT, status)
    assert "https://sso.example" in raised.detail
    assert "login" not in raised.detail


async def test_too_large_by_content_length(mocked: Any, client: FlinkClient) -> None:
    mocked.get(OVERVIEW, body=b'{"jobs":[]}', headers={"Content-Length": "1025"})
    assert (await failure(client.overview())).kind is FailureKind.TOO_LARGE


async def test_too_large_by_chunks(mocked: Any, client: FlinkClient) -> None:
    mocked.get(OVERVIEW, body=b'{"jobs":[' + b" " * 1100 + b"]}")
    assert (await failure(client.overview())).kind is FailureKind.TOO_LARGE


async def test_a_body_at_the_limit_is_read(mocked: Any, client: FlinkClient) -> None:
    body = b'{"jobs":[' + b" " * (1024 - 11) + b"]}"
    assert len(body) == 1024
    mocked.get(OVERVIEW, body=body, headers={"Content-Length": "1024"})
    assert await client.overview() == []


async def test_not_json(mocked: Any, client: FlinkClient) -> None:
    mocked.get(OVERVIEW, body="<html><title>Sign in</title></html>", content_type="text/html")
    raised = await failure(client.overview())
    assert (raised.kind, raised.status) == (FailureKind.NOT_JSON, None)


async def test_bad_shape(mocked: Any, client: FlinkClient) -> None:
    mocked.get(OVERVIEW, payload={"jobs": [ENTRY | {"state": 42}]})
    assert (await failure(client.overview())).kind is FailureKind.BAD_SHAPE


async def test_details_never_contain_the_base_url_or_headers(
    mocked: Any, session: aiohttp.ClientSession
) -> None:
    base = "http://admin:s3cret@flink.example:8081"
    client = FlinkClient(session, base, timeout=1.0, headers={"X-Token": "t0k3n"})
    url = f"{base}/jobs/overview"
    mocked.get(url, exception=aiohttp.ServerDisconnectedError(f"oops at {url}, X-Token: t0k3n"))
    mocked.get(url, status=500, payload={"errors": ["s3cret t0k3n"]})
    mocked.get(url, exception=aiohttp.ClientConnectionError(f"Connection refused: GET {url}"))
    for _ in range(3):
        raised = await failure(client.overview())
        assert "s3cret" not in str(raised)
        assert "t0k3n" not in str(raised)


# -- on a real socket -------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeCluster, FakeFlinkServer]]:
    cluster = FakeCluster()
    cluster.submit("orders", JID)
    async with FakeFlinkServer(cluster) as server:
        yield cluster, server


async def test_real_socket_answers(
    fake: tuple[FakeCluster, FakeFlinkServer], session: aiohttp.ClientSession
) -> None:
    _, server = fake
    client = FlinkClient(session, server.url + "/", timeout=2.0)
    assert [job.jid for job in await client.overview()] == [JID]


async def test_hang_is_a_timeout(
    fake: tuple[FakeCluster, FakeFlinkServer], session: aiohttp.ClientSession
) -> None:
    cluster, server = fake
    cluster.set_fault(Endpoint.OVERVIEW, FaultKind.HANG)
    client = FlinkClient(session, server.url, timeout=0.2)
    # The outer deadline only guards the test run; the client's own timeout must fire first.
    raised = await failure(asyncio.wait_for(client.overview(), timeout=10))
    assert raised.kind is FailureKind.TIMEOUT


async def test_a_body_that_trickles_in_times_out_as_a_whole(
    fake: tuple[FakeCluster, FakeFlinkServer], session: aiohttp.ClientSession
) -> None:
    cluster, server = fake
    cluster.set_fault(Endpoint.OVERVIEW, Fault(FaultKind.SLOW, seconds=30))
    client = FlinkClient(session, server.url, timeout=0.2)
    raised = await failure(asyncio.wait_for(client.overview(), timeout=10))
    assert raised.kind is FailureKind.TIMEOUT


@pytest.mark.parametrize("content_length", [False, True])
async def test_oversized_body_on_the_wire(
    fake: tuple[FakeCluster, FakeFlinkServer],
    session: aiohttp.ClientSession,
    content_length: bool,
) -> None:
    cluster, server = fake
    cluster.set_fault(
        Endpoint.OVERVIEW, Fault(FaultKind.OVERSIZED, size=8 << 20, content_length=content_length)
    )
    client = FlinkClient(session, server.url, timeout=5.0, max_body_bytes=1 << 20)
    raised = await failure(client.overview())
    assert (raised.kind, raised.status) == (FailureKind.TOO_LARGE, 200)
    # The connection is dropped, not drained: the next request still works.
    cluster.clear_fault(Endpoint.OVERVIEW)
    assert len(await client.overview()) == 1


async def test_reset_mid_body(
    fake: tuple[FakeCluster, FakeFlinkServer], session: aiohttp.ClientSession
) -> None:
    cluster, server = fake
    cluster.set_fault(Endpoint.DETAILS, FaultKind.RESET)
    client = FlinkClient(session, server.url, timeout=2.0)
    assert (await failure(client.job_details(JID))).kind is FailureKind.RESET


async def test_redirect_on_the_wire_is_not_followed(
    fake: tuple[FakeCluster, FakeFlinkServer], session: aiohttp.ClientSession
) -> None:
    cluster, server = fake
    cluster.set_fault(Endpoint.METRICS, FaultKind.REDIRECT)
    client = FlinkClient(session, server.url, timeout=2.0)
    raised = await failure(client.num_restarts(JID))
    assert (raised.kind, raised.status) == (FailureKind.REDIRECT, 302)
    assert cluster.requests(Endpoint.METRICS) == 1


async def test_refused_on_the_wire(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    # Nothing listens on the port any more.
    client = FlinkClient(session, f"http://127.0.0.1:{port}", timeout=2.0)
    assert (await failure(client.overview())).kind is FailureKind.REFUSED


async def test_not_http_on_the_wire_is_a_reset(session: aiohttp.ClientSession) -> None:
    async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_garbage, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        client = FlinkClient(session, f"http://127.0.0.1:{port}", timeout=2.0)
        assert (await failure(client.overview())).kind is FailureKind.RESET


async def test_cancellation_propagates(
    fake: tuple[FakeCluster, FakeFlinkServer], session: aiohttp.ClientSession
) -> None:
    cluster, server = fake
    cluster.set_fault(Endpoint.OVERVIEW, FaultKind.HANG)
    client = FlinkClient(session, server.url, timeout=30.0)
    request = asyncio.create_task(client.overview())
    await wait_until(lambda: cluster.requests(Endpoint.OVERVIEW) == 1)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request


def test_flink_error_reads_as_one_line() -> None:
    error = FlinkError(
        FailureKind.HTTP_STATUS, "GET /jobs/overview: HTTP 500:\nInternal", status=500
    )
    assert str(error) == "http_status: GET /jobs/overview: HTTP 500: Internal"
    assert (error.kind, error.status) == (FailureKind.HTTP_STATUS, 500)
    assert json.dumps([kind.value for kind in FailureKind]) == json.dumps(
        [
            "refused",
            "reset",
            "timeout",
            "tls",
            "http_status",
            "too_large",
            "not_json",
            "bad_shape",
            "redirect",
        ]
    )
