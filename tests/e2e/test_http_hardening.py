"""Malformed requests to the daemon's HTTP server, sent as raw bytes (an HTTP client library
refuses to send most of them): each gets a 4xx or, for what is not HTTP at all, a 400 or a
closed connection; none gets a 5xx, and the daemon keeps serving.

Some requests are odd but harmless and are answered as if the oddity were absent, by design:
a query string (no endpoint takes parameters: they are ignored), a body on a GET (ignored, not
even waited for), a namespace no Job can have (an empty list, as for any namespace without
Jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_harness import DaemonHandle, daemon_config, dashed, running_daemon, target

from probe.testing import FakeFlinkServer

ANSWER_DEADLINE = 5.0
HOST = b"Host: 127.0.0.1\r\n"


@dataclass(frozen=True, slots=True)
class RawAnswer:
    status: int | None
    """None: the connection closed without an HTTP answer."""
    head: bytes
    body: bytes


def parse(data: bytes) -> RawAnswer:
    if not data.startswith(b"HTTP/"):
        return RawAnswer(None, data, b"")
    head, _, body = data.partition(b"\r\n\r\n")
    return RawAnswer(int(head.split(b" ", 2)[1]), head, body)


async def exchange(port: int, request: bytes) -> RawAnswer:
    """Send `request` on a new connection; read the answer until the server closes it (or
    the end of its body, when it keeps the connection open)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        received = b""
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(ANSWER_DEADLINE):
                while chunk := await reader.read(65536):
                    received += chunk
                    if complete(received):
                        break
        return parse(received)
    finally:
        writer.close()


def complete(data: bytes) -> bool:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def get(path: bytes, *extra: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\n" + HOST + b"".join(extra) + b"\r\n"


MALFORMED: dict[str, tuple[bytes, set[int | None]]] = {
    # name: (request, acceptable answers; None = the connection closed without one)
    "a 100 KB header": (get(b"/healthz", b"X-Big: " + b"a" * 100_000 + b"\r\n"), {400, 431}),
    "10,000 headers": (
        get(b"/healthz", *(b"X-H%d: v\r\n" % i for i in range(10_000))),
        {400, 431},
    ),
    "a 100 KB URL": (get(b"/api/v1/namespaces/" + b"a" * 100_000 + b"/jobs"), {400, 414}),
    "an empty namespace": (get(b"/api/v1/namespaces//jobs"), {404}),
    "dot-dot out of the API": (
        get(b"/api/v1/namespaces/default/jobs/../../../../../../etc/passwd"),
        {404},
    ),
    "a percent-encoded NUL as Job id": (get(b"/api/v1/namespaces/default/jobs/%00"), {404}),
    "invalid UTF-8 as Job id": (get(b"/api/v1/namespaces/default/jobs/%ff%fe%fd"), {404}),
    "percent junk as Job id": (get(b"/api/v1/namespaces/default/jobs/%zz%"), {404}),
    "raw invalid UTF-8 in the path": (get(b"/api/v1/namespaces/\xff\xfe/jobs"), {400}),
    "a raw NUL in the path": (get(b"/healthz\x00"), {400}),
    "a NUL in a header": (get(b"/healthz", b"X-A: b\x00c\r\n"), {400}),
    "a header without a colon": (get(b"/healthz", b"NoColonHere\r\n"), {400}),
    "method BREW": (b"BREW /api/v1/namespaces/default/jobs HTTP/1.1\r\n" + HOST + b"\r\n", {400}),
    "method TRACE": (b"TRACE /api/v1/namespaces/default/jobs HTTP/1.1\r\n" + HOST + b"\r\n", {405}),
    "method TRACE on /metrics": (b"TRACE /metrics HTTP/1.1\r\n" + HOST + b"\r\n", {405}),
    "OPTIONS *": (b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n", {404, 405}),
    "CONNECT (not a proxy)": (
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        {400, 404, 405},
    ),
    "Content-Length and chunked (smuggling)": (
        get(b"/healthz", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
        {400},
    ),
    "a broken chunk size": (
        b"POST /api/v1/namespaces/default/jobs HTTP/1.1\r\n"
        + HOST
        + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n",
        {400},
    ),
    "HTTP/9.9": (b"GET /healthz HTTP/9.9\r\n" + HOST + b"\r\n", {400, 505}),
    "bare LF line ends": (b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n", {400}),
    "a request line that is not HTTP": (b"HELLO WORLD\r\n\r\n", {400, None}),
    "a TLS ClientHello": (
        bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00" * 64,
        {400, None},
    ),
    "binary noise": (bytes(range(256)) * 4, {400, None}),
}


@pytest.fixture
async def daemon(fake_flink: FakeFlinkServer, state_path: Path) -> AsyncIterator[DaemonHandle]:
    fake_flink.cluster.submit("orders", "3f1da3c86f22430f9200eda014ea5319")
    async with running_daemon(daemon_config(state_path, [target("prod", fake_flink.url)])) as d:
        await d.wait_state(dashed("3f1da3c86f22430f9200eda014ea5319"), "STARTED")
        yield d


def port_of(daemon: DaemonHandle) -> int:
    port = daemon.daemon.bound_port
    assert port is not None
    return port


async def test_malformed_requests_get_a_4xx_and_the_daemon_keeps_serving(
    daemon: DaemonHandle,
) -> None:
    port = port_of(daemon)
    jobs_before = await daemon.jobs()
    wrong = {}
    for name, (request, acceptable) in MALFORMED.items():
        answer = await exchange(port, request)
        if answer.status not in acceptable:
            wrong[name] = (answer.status, answer.head[:200], answer.body[:200])
        # An answer the API gives itself is its JSON error.
        if answer.status in (404, 405):
            error = json.loads(answer.body)["error"]
            assert error["code"] == answer.status, (name, error)
        health = await exchange(port, get(b"/healthz"))
        assert health.status == 200, f"after {name}: /healthz answered {health}"
    assert not wrong, wrong
    assert await daemon.jobs() == jobs_before
    assert (await daemon.request("/metrics")).status == 200


async def test_odd_but_harmless_requests_are_answered_as_if_plain(daemon: DaemonHandle) -> None:
    port = port_of(daemon)
    jobs_path = b"/api/v1/namespaces/default/jobs"
    plain = await exchange(port, get(jobs_path))
    assert plain.status == 200
    items = json.loads(plain.body)["items"]
    assert len(items) == 1

    for request in (
        get(jobs_path + b"?%zz=%ff&page=-1&sort=[]&sort=name&x"),
        get(jobs_path, b"Content-Length: 11\r\n") + b"hello world",
        # A body announced but never sent: answered at once, not waited for.
        get(jobs_path, b"Content-Length: 1000000000\r\n") + b"hello",
    ):
        answer = await exchange(port, request)
        assert answer.status == 200, request[:100]
        assert json.loads(answer.body)["items"] == items, request[:100]

    for namespace in (b"%zz%25", b"%ff%fe", b"a%2Fb", b"..", b"%2e%2e"):
        answer = await exchange(port, get(b"/api/v1/namespaces/" + namespace + b"/jobs"))
        assert answer.status == 200, namespace
        assert json.loads(answer.body)["items"] == [], namespace


async def test_stalled_half_requests_do_not_block_other_clients(daemon: DaemonHandle) -> None:
    """A hundred connections that sent half a request and wait: the others are served."""
    port = port_of(daemon)
    stalled = []
    try:
        for _ in range(100):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0")
            await writer.drain()
            stalled.append(writer)
        assert (await exchange(port, get(b"/healthz"))).status == 200
        assert len(await daemon.jobs()) == 1
    finally:
        for writer in stalled:
            writer.close()


def test_unparseable_requests_are_not_logged_as_errors_above_debug() -> None:
    """A port scanner must not fill the log: aiohttp's parse errors are dropped unless the
    level is debug; other library errors still get through."""
    import logging
    import sys

    from aiohttp.http_exceptions import BadHttpMessage

    from probe._cogs.logs import _drop_malformed_request_errors

    def record(error: Exception) -> logging.LogRecord:
        try:
            raise error
        except Exception:
            info = sys.exc_info()
        return logging.LogRecord("aiohttp.server", logging.ERROR, "", 0, "x", None, info)

    assert not _drop_malformed_request_errors(record(BadHttpMessage("junk")))
    assert _drop_malformed_request_errors(record(RuntimeError("a real bug")))
