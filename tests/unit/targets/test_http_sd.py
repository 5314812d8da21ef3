"""http_sd targets from a real HTTP server on loopback: a good answer is taken, and a 500,
garbage, a timeout or a refused connection keep the last good list."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import anyio
import pytest
import structlog
from aiohttp import web
from daemon_harness import wait_until

from probe._targets.discovered import DiscoveredTarget
from probe._targets.file_sd import TargetList
from probe._targets.http_sd import REFRESH_HEADER, HttpTargets

GROUPS = [{"targets": ["http://jm-a:8081"], "labels": {"namespace": "shop"}}]
GOOD = (DiscoveredTarget("jm-a:8081", "http://jm-a:8081/", "shop", source="http"),)


@dataclass
class Endpoint:
    """An http_sd endpoint whose next answers the test sets."""

    status: int = 200
    body: bytes = json.dumps(GROUPS).encode()
    hang: bool = False
    """Hold the answer until the test ends (a timeout, from the client's side)."""
    released: anyio.Event = field(default_factory=anyio.Event)
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.headers))
        if self.hang:
            await self.released.wait()
        return web.Response(status=self.status, body=self.body, content_type="application/json")


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    served = Endpoint()
    app = web.Application()
    app.router.add_get("/targets", served.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    served.url = f"http://127.0.0.1:{port}/targets"
    try:
        yield served
    finally:
        served.released.set()
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


async def test_a_good_answer_gives_its_targets_and_prometheus_header(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    source = HttpTargets(session, endpoint.url, refresh=30)

    assert await source.fetch(TargetList()) == TargetList(GOOD)
    assert endpoint.requests[0][REFRESH_HEADER] == "30"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param({"status": 500}, "answered HTTP 500", id="500"),
        pytest.param({"status": 404}, "answered HTTP 404", id="404"),
        pytest.param({"body": b"<html>oops</html>"}, "invalid JSON", id="garbage"),
        pytest.param({"body": b'[{"targets": ["http://a'}, "invalid JSON", id="cut-short"),
        pytest.param({"body": b'{"targets": []}'}, "must be a list", id="not-a-list"),
        pytest.param({"hang": True}, "no answer within 200ms", id="timeout"),
        pytest.param(
            {"body": b"[" + b" " * 2048 + b"]"}, "answer larger than 1KiB", id="too-large"
        ),
    ],
)
async def test_a_failed_fetch_keeps_the_last_good_list(
    endpoint: Endpoint,
    session: aiohttp.ClientSession,
    answer: dict[str, object],
    error: str,
) -> None:
    source = HttpTargets(session, endpoint.url, refresh=30, timeout=0.2, max_body_bytes=1024)
    good = await source.fetch(TargetList())

    for key, value in answer.items():
        setattr(endpoint, key, value)
    failed = await source.fetch(good)

    assert failed.targets == GOOD
    assert failed.error is not None
    assert failed.error.startswith(f"{endpoint.url}: {error}")
    assert "\n" not in failed.error


async def test_a_refused_connection_keeps_the_last_good_list(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    good = TargetList(GOOD)
    closed = HttpTargets(session, "http://127.0.0.1:1/targets", refresh=30)

    failed = await closed.fetch(good)

    assert failed.targets == GOOD
    assert failed.error is not None
    assert failed.error.startswith("http://127.0.0.1:1/targets: Cannot connect to host")


async def test_a_password_in_the_url_is_not_shown_in_errors(
    session: aiohttp.ClientSession,
) -> None:
    source = HttpTargets(session, "http://sd:hunter2@127.0.0.1:1/targets", refresh=30)

    failed = await source.fetch(TargetList())

    assert failed.error is not None
    assert "hunter2" not in failed.error


async def until(condition: Callable[[], object], what: str) -> None:
    async def check() -> object:
        return condition()

    await wait_until(check, what)


async def test_run_publishes_changes_and_counts_each_failing_episode_once(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    lists: list[tuple[DiscoveredTarget, ...]] = []
    errors: list[None] = []
    source = HttpTargets(
        session, endpoint.url, refresh=0.05, timeout=1, on_error=lambda: errors.append(None)
    )
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(source.run, lists.append)
            await until(lambda: lists == [GOOD], "the first list")
            endpoint.status = 500
            asked = len(endpoint.requests)
            await until(lambda: len(endpoint.requests) > asked + 3, "fetches failing")
            endpoint.status = 200
            endpoint.body = b"[]"
            await until(lambda: lists == [GOOD, ()], "the new list")
            tasks.cancel_scope.cancel()

    assert len(errors) == 1
    assert [e["event"] for e in logs] == [
        "targets refused; keeping the last good list",
        "targets read again",
    ]


async def test_reload_fetches_at_once(endpoint: Endpoint, session: aiohttp.ClientSession) -> None:
    lists: list[tuple[DiscoveredTarget, ...]] = []
    source = HttpTargets(session, endpoint.url, refresh=3600)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(source.run, lists.append)
        await until(lambda: lists == [GOOD], "the first list")
        endpoint.body = b"[]"
        source.reload()
        await until(lambda: lists == [GOOD, ()], "the list fetched on reload")
        tasks.cancel_scope.cancel()
