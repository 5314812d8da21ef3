"""Targets that come and go, end to end: the daemon in this process and event loop, fake Flink
clusters on real sockets, targets files edited on disk, an http_sd server on loopback, and
`GET /probe` scraped as Prometheus scrapes a multi-target exporter."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from daemon_harness import (
    DaemonHandle,
    Metrics,
    daemon_config,
    dashed,
    free_port,
    restarts_of,
    running_daemon,
    state_of,
    target,
    wait_for,
    write_config,
)

from probe._config.discovery import target_url
from probe._targets import url_name
from probe._web.metrics import JOB_FAMILIES
from probe.testing import Endpoint, FakeCluster, FakeFlinkServer

ORDERS = "0a0a0a0a0a0a4a0a8a0a0a0a0a0a0a0a"
BILLING = "0b0b0b0b0b0b4b0b8b0b0b0b0b0b0b0b"
SEARCH = "0c0c0c0c0c0c4c0c8c0c0c0c0c0c0c0c"
LOOPBACK_ALLOWED = r"http://127\.0\.0\.1:[0-9]+/[a-z0-9/]*"
"""`enrollment.allow` for the fake clusters (and paths, to enroll many URLs on one port)."""


def name_of(url: str) -> str:
    """The name a URL without one gets."""
    return url_name(target_url(url))


def group(*urls: str, **labels: str) -> dict[str, Any]:
    """A file_sd target group."""
    return {"targets": list(urls), "labels": labels}


def write_targets(path: Path, groups: list[dict[str, Any]]) -> None:
    """Write a targets file as a tool should: a complete file renamed over the old one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(groups))
    temporary.replace(path)


def discovery_config(
    tmp_path: Path,
    targets: list[dict[str, object]] | None = None,
    probe: dict[str, object] | None = None,
    **keys: object,
) -> dict[str, Any]:
    """`daemon_config` (fast probing, `numRestarts` read every round, `probe` settings over
    it) with the keys of targets that come and go."""
    config = daemon_config(tmp_path / "state.db", targets or [], metrics_refresh="0s")
    config["probe"].update(probe or {})
    return {**config, **keys}


def targets_file(tmp_path: Path, groups: list[dict[str, Any]]) -> tuple[Path, str]:
    """A targets file holding `groups`, and the glob naming it."""
    directory = tmp_path / "targets"
    directory.mkdir()
    path = directory / "flink.json"
    write_targets(path, groups)
    return path, str(directory / "*.json")


async def probe(daemon: DaemonHandle, **query: str) -> tuple[int, str]:
    """`GET /probe?...`: its status and body."""
    answer = await daemon.request(f"/probe?{urlencode(query)}")
    return answer.status, answer.text


async def wait_target_gone(daemon: DaemonHandle, name: str) -> Metrics:
    return await daemon.wait_metrics(
        lambda m: m.value("flink_probe_target_up", target=name) is None,
        f"target {name}'s loop stopped",
    )


async def wait_count(daemon: DaemonHandle, what: str, value: float, **labels: str) -> Metrics:
    return await daemon.wait_metrics(
        lambda m: m.value(what, **labels) == value, f"{what}{labels} == {value}"
    )


@asynccontextmanager
async def flink(*jobs: tuple[str, str]) -> AsyncIterator[tuple[FakeCluster, FakeFlinkServer]]:
    """A fake cluster running `jobs` (name, jid), served on loopback."""
    cluster = FakeCluster()
    for name, jid in jobs:
        cluster.submit(name, jid)
    async with FakeFlinkServer(cluster) as server:
        yield cluster, server


# -- targets files -----------------------------------------------------------------------------


async def test_an_edited_targets_file_is_seen_and_a_half_written_one_never_acted_on(
    tmp_path: Path,
) -> None:
    async with (
        flink(("orders", ORDERS)) as (first, one),
        flink(("billing", BILLING)) as (_, two),
        flink(("search", SEARCH)) as (third, three),
    ):
        path, glob = targets_file(tmp_path, [group(one.url, namespace="shop")])
        config = discovery_config(tmp_path, targets_files=[glob], targets_refresh="100ms")
        async with running_daemon(config) as daemon:
            await daemon.wait_state(dashed(ORDERS), "STARTED", namespace="shop")

            write_targets(path, [group(one.url, namespace="shop"), group(two.url)])
            await daemon.wait_state(dashed(BILLING), "STARTED")

            # The first half of a rewrite that would leave only the third cluster.
            text = json.dumps([group(three.url)])
            path.write_text(text[: len(text) // 2])
            await wait_count(daemon, "flink_probe_target_source_errors_total", 1, source="file")
            # Rounds of the kept targets, and re-reads of the broken file, go on meanwhile.
            overviews = first.requests(Endpoint.OVERVIEW)
            await daemon.wait_probed(dashed(BILLING), 3)
            metrics = await daemon.metrics()
            assert first.requests(Endpoint.OVERVIEW) > overviews
            assert third.requests() == 0, "a half-written file was acted on"
            assert metrics.value("flink_probe_targets", source="file") == 2
            assert metrics.value("flink_probe_target_source_errors_total", source="file") == 1

            path.write_text(text)  # the rewrite completes
            await daemon.wait_state(dashed(SEARCH), "STARTED")
            metrics = await wait_target_gone(daemon, name_of(one.url))
            assert metrics.value("flink_probe_target_up", target=name_of(two.url)) is None
            assert metrics.value("flink_probe_targets", source="file") == 1


async def test_a_target_removed_from_its_file_stops_and_resumes_its_jobs_when_put_back(
    tmp_path: Path,
) -> None:
    async with flink(("orders", ORDERS)) as (away, a), flink(("billing", BILLING)) as (_, kept):
        path, glob = targets_file(tmp_path, [group(a.url), group(kept.url)])
        config = discovery_config(tmp_path, targets_files=[glob], targets_refresh="100ms")
        async with running_daemon(config) as daemon:
            before = await daemon.wait_state(dashed(ORDERS), "STARTED")

            write_targets(path, [group(kept.url)])
            await wait_target_gone(daemon, name_of(a.url))
            # A commit after the stop: the last round of the removed target is shown.
            await daemon.wait_probed(dashed(BILLING), 1)
            left = await daemon.job(dashed(ORDERS))
            overviews = away.requests(Endpoint.OVERVIEW)
            await daemon.wait_probed(dashed(BILLING), 3)
            assert away.requests(Endpoint.OVERVIEW) == overviews, "a removed target was probed"
            assert await daemon.job(dashed(ORDERS)) == left, "a removed target's Job changed"
            assert state_of(left) == "STARTED"  # history, not made final

            away.restart(ORDERS, n=2)  # while nobody looks
            write_targets(path, [group(a.url), group(kept.url)])
            # A discovered target's numRestarts may be probe.interval + 10 s old: the count
            # is confirmed that long after the epoch was first seen.
            back = await daemon.wait_job(
                dashed(ORDERS), lambda job: restarts_of(job) == 2, "2 restarts", within=30
            )
            assert back["metadata"]["createdAt"] == before["metadata"]["createdAt"]
            assert state_of(back) == "STARTED"
            assert sorted(job["metadata"]["id"] for job in await daemon.jobs()) == [
                dashed(ORDERS),
                dashed(BILLING),
            ]


async def test_a_target_whose_name_or_url_is_taken_is_left_out_and_counted_once(
    tmp_path: Path,
) -> None:
    async with flink(("orders", ORDERS)) as (_, configured), flink() as (other, elsewhere):
        _, glob = targets_file(tmp_path, [group(elsewhere.url, name="prod"), group(configured.url)])
        config = discovery_config(
            tmp_path,
            [target("prod", configured.url)],
            targets_files=[glob],
            targets_refresh="100ms",
        )
        async with running_daemon(config) as daemon:
            await daemon.wait_probed(dashed(ORDERS), 3)  # the file was read again meanwhile
            metrics = await daemon.metrics()
            assert metrics.value("flink_probe_target_source_errors_total", source="file") == 2
            assert metrics.value("flink_probe_targets", source="config") == 1
            assert metrics.value("flink_probe_targets", source="file") == 0
            assert other.requests() == 0
            [job] = await daemon.jobs()
            assert job["metadata"]["annotations"]["flink-probe/target"] == "prod"


# -- http_sd -----------------------------------------------------------------------------------


@dataclass
class HttpSd:
    """An http_sd endpoint on loopback: answers `status` with `groups` as JSON."""

    groups: list[dict[str, Any]]
    status: int = 200
    refresh_headers: list[str] = field(default_factory=list)
    url: str = ""

    async def answer(self, request: web.Request) -> web.Response:
        self.refresh_headers.append(request.headers["X-Prometheus-Refresh-Interval-Seconds"])
        return web.json_response(self.groups, status=self.status)


@asynccontextmanager
async def http_sd(groups: list[dict[str, Any]]) -> AsyncIterator[HttpSd]:
    endpoint = HttpSd(groups)
    app = web.Application()
    app.router.add_get("/targets", endpoint.answer)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        endpoint.url = f"http://127.0.0.1:{port}/targets"
        yield endpoint
    finally:
        await runner.cleanup()


async def test_http_sd_targets_are_probed_and_a_failing_answer_keeps_them(tmp_path: Path) -> None:
    async with flink(("billing", BILLING)) as (_, server):
        labels = {"namespace": "finance", "deployment": "invoices"}
        async with http_sd([group(server.url, **labels)]) as endpoint:
            config = discovery_config(
                tmp_path, targets_http={"url": endpoint.url, "refresh": "100ms"}
            )
            async with running_daemon(config) as daemon:
                job = await daemon.wait_state(dashed(BILLING), "STARTED", namespace="finance")
                assert job["metadata"]["deploymentName"] == "invoices"
                assert endpoint.refresh_headers[0] == "0.1"

                endpoint.status = 503
                await wait_count(daemon, "flink_probe_target_source_errors_total", 1, source="http")
                await daemon.wait_probed(dashed(BILLING), 3, namespace="finance")
                metrics = await daemon.metrics()
                assert metrics.value("flink_probe_targets", source="http") == 1
                assert metrics.value("flink_probe_target_source_errors_total", source="http") == 1

                endpoint.status, endpoint.groups = 200, []
                metrics = await wait_target_gone(daemon, name_of(server.url))
                assert metrics.value("flink_probe_targets", source="http") == 0


async def test_sighup_fetches_http_sd_at_once(tmp_path: Path) -> None:
    async with flink(("billing", BILLING)) as (_, server), http_sd([]) as endpoint:
        config = discovery_config(tmp_path, targets_http={"url": endpoint.url, "refresh": "1h"})
        async with running_daemon(config) as daemon:
            # Fetched once: the daemon runs, its signal handlers installed.
            await wait_for(
                lambda: daemon.request("/readyz"),
                lambda _: endpoint.refresh_headers,
                "the first fetch of http_sd",
            )
            endpoint.groups = [group(server.url)]
            os.kill(os.getpid(), signal.SIGHUP)  # the daemon's handler, in this process
            await daemon.wait_state(dashed(BILLING), "STARTED")
            assert len(endpoint.refresh_headers) == 2


# -- GET /probe --------------------------------------------------------------------------------


@contextmanager
def listening_socket() -> Iterator[tuple[socket.socket, str]]:
    """A socket that listens and never answers, and its URL: a connection would queue up."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        yield listener, f"http://127.0.0.1:{listener.getsockname()[1]}/"


@pytest.mark.parametrize(
    ("enrollment", "message"),
    [
        ({"allow": [r"http://flink-[a-z]+\.internal:8081/"]}, "does not match enrollment.allow"),
        ({}, "enrollment is off: enrollment.allow is empty"),
    ],
)
async def test_a_url_outside_allow_gets_403_and_no_request(
    tmp_path: Path, enrollment: dict[str, Any], message: str
) -> None:
    async with flink(("orders", ORDERS)) as (_, server):
        config = discovery_config(tmp_path, [target("prod", server.url)], enrollment=enrollment)
        with listening_socket() as (listener, url):
            async with running_daemon(config) as daemon:
                answer = await daemon.request(f"/probe?{urlencode({'target': url})}")
                assert answer.status == 403
                assert message in answer.json()["error"]["message"]
                await daemon.wait_probed(dashed(ORDERS), 3)  # time enough for any request
                with pytest.raises(BlockingIOError):
                    listener.accept()
                metrics = await daemon.metrics()
                assert (
                    metrics.value("flink_probe_enrollments_refused_total", reason="forbidden") == 1
                )
                assert metrics.value("flink_probe_targets", source="enrolled") == 0


async def test_a_target_another_source_declares_is_answered_without_enrollment(
    tmp_path: Path,
) -> None:
    async with flink(("orders", ORDERS)) as (_, server):
        _, glob = targets_file(tmp_path, [group(server.url, namespace="shop")])
        config = discovery_config(tmp_path, targets_files=[glob])  # enrollment off
        async with running_daemon(config) as daemon:
            await daemon.wait_state(dashed(ORDERS), "STARTED", namespace="shop")
            status, text = await probe(daemon, target=server.url)
            assert status == 200
            answer = Metrics.parse(text)
            assert answer.value("flink_probe_job_state", state="STARTED") == 1
            assert answer.value("flink_probe_target_up", target=name_of(server.url)) == 1
            metrics = await daemon.metrics()
            assert metrics.total("flink_probe_enrollments_refused_total") == 0
            assert metrics.value("flink_probe_targets", source="enrolled") == 0


async def test_probe_enrolls_a_cluster_and_answers_its_series_at_the_first_scrape(
    tmp_path: Path,
) -> None:
    first_wait = 8.0
    async with (
        flink(("orders", ORDERS)) as (cluster, server),
        flink(("billing", BILLING)) as (_, other),
    ):
        cluster.restart(ORDERS, n=3)
        config = discovery_config(
            tmp_path,
            [target("other", other.url)],
            enrollment={"allow": [LOOPBACK_ALLOWED], "first_wait": f"{first_wait}s"},
        )
        async with running_daemon(config) as daemon:
            began = time.monotonic()
            status, text = await probe(
                daemon, target=server.url, namespace="shop", deployment="orders"
            )
            waited = time.monotonic() - began

            assert status == 200, text
            assert waited < first_wait / 2, "the answer waited for first_wait, not the round"
            name = name_of(server.url)
            answer = Metrics.parse(text)
            assert answer.value("flink_probe_target_up", target=name) == 1
            [state] = answer.series("flink_probe_job_state", state="STARTED")
            assert state.labels == {
                "deployment": "orders",
                "flink_job_id": ORDERS,
                "job_id": dashed(ORDERS),
                "namespace": "shop",
                "target": name,
                "state": "STARTED",
            }
            families = {family.name for family in JOB_FAMILIES} | {"flink_probe_target_up"}
            assert {s.name.removesuffix("_total") for s in answer.samples} <= families
            assert {s.labels["target"] for s in answer.samples} == {name}  # not "other"

            job = await daemon.job(dashed(ORDERS), namespace="shop")
            assert job is not None
            assert job["metadata"]["deploymentName"] == "orders"
            metrics = await daemon.metrics()
            assert metrics.value("flink_probe_targets", source="enrolled") == 1
            assert metrics.value("flink_probe_targets", source="config") == 1


async def test_a_first_scrape_answers_after_first_wait_and_the_daemon_stays_ready(
    tmp_path: Path,
) -> None:
    """The new target's round hangs: the scrape is answered after first_wait, and readiness
    ignores the target (a scrape must not take the daemon out of service)."""
    with listening_socket() as (_, url):  # connects, then never answers
        config = discovery_config(
            tmp_path,
            probe={"interval": "4s", "timeout": "3s"},
            enrollment={"allow": [LOOPBACK_ALLOWED], "first_wait": "50ms"},
        )
        async with running_daemon(config) as daemon:
            began = time.monotonic()
            status, text = await probe(daemon, target=url)
            assert time.monotonic() - began < 2, "the answer waited for the round"
            assert status == 200
            assert Metrics.parse(text).value("flink_probe_target_up", target=name_of(url)) == 0
            # Its loop runs, its first overview unanswered: the daemon stays ready all the same.
            await wait_count(daemon, "flink_probe_target_up", 0, target=name_of(url))
            assert (await daemon.request("/readyz")).status == 200


async def test_an_enrolled_target_not_scraped_for_the_ttl_is_retired_and_resumes_when_back(
    tmp_path: Path,
) -> None:
    async with flink(("orders", ORDERS)) as (_, server):
        config = discovery_config(
            tmp_path, enrollment={"allow": [LOOPBACK_ALLOWED], "ttl": "1s", "first_wait": "5s"}
        )
        async with running_daemon(config) as daemon:
            assert (await probe(daemon, target=server.url))[0] == 200
            before = await daemon.wait_state(dashed(ORDERS), "STARTED")

            metrics = await wait_target_gone(daemon, name_of(server.url))
            assert metrics.value("flink_probe_targets", source="enrolled") == 0
            left = await daemon.job(dashed(ORDERS))
            assert state_of(left) == "STARTED"  # history, not made final

            assert (await probe(daemon, target=server.url))[0] == 200
            back = await daemon.wait_probed(dashed(ORDERS), 2)
            assert back["metadata"]["createdAt"] == before["metadata"]["createdAt"]
            assert state_of(back) == "STARTED"


async def test_a_flood_of_new_urls_hits_max_targets_and_gets_429(tmp_path: Path) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    config = discovery_config(
        tmp_path,
        enrollment={"allow": [LOOPBACK_ALLOWED], "max_targets": 3, "first_wait": "0s"},
    )
    async with running_daemon(config) as daemon:
        statuses = [(await probe(daemon, target=f"{unreachable}/c{i}/"))[0] for i in range(60)]

        assert statuses == [200] * 3 + [429] * 57
        metrics = await daemon.metrics()
        assert metrics.value("flink_probe_enrollments_refused_total", reason="full") == 57
        assert metrics.value("flink_probe_targets", source="enrolled") == 3
        # An enrolled URL is still answered: it holds its place.
        assert (await probe(daemon, target=f"{unreachable}/c0/"))[0] == 200


async def test_a_name_stays_with_its_url_and_a_taken_one_gets_409(tmp_path: Path) -> None:
    async with flink() as (_, configured), flink() as (_, server):
        config = discovery_config(
            tmp_path,
            [target("prod", configured.url)],
            enrollment={"allow": [LOOPBACK_ALLOWED], "first_wait": "0s"},
        )
        async with running_daemon(config) as daemon:
            assert (await probe(daemon, target=server.url, name="prod"))[0] == 409
            assert (await probe(daemon, target=server.url, name="orders"))[0] == 200
            assert (await probe(daemon, target=server.url, name="billing"))[0] == 409
            assert (await probe(daemon, target=server.url))[0] == 200  # known as "orders"
            assert (await probe(daemon, target=server.url, namespace="a b"))[0] == 400
            metrics = await daemon.wait_metrics(
                lambda m: m.value("flink_probe_target_up", target="orders") is not None,
                "the target enrolled as orders probed",
            )
            assert metrics.value("flink_probe_enrollments_refused_total", reason="conflict") == 2
            assert metrics.value("flink_probe_enrollments_refused_total", reason="bad_request") == 1


async def test_a_reload_that_narrows_allow_retires_the_targets_it_no_longer_admits(
    tmp_path: Path,
) -> None:
    async with flink(("orders", ORDERS)) as (_, server):
        config = discovery_config(
            tmp_path, enrollment={"allow": [LOOPBACK_ALLOWED], "first_wait": "5s"}
        )
        async with running_daemon(config) as daemon:
            assert (await probe(daemon, target=server.url))[0] == 200
            await daemon.wait_state(dashed(ORDERS), "STARTED")

            config["enrollment"]["allow"] = [r"http://flink-[a-z]+\.internal:8081/"]
            write_config(daemon.daemon.config_path or Path(), config)
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_target_gone(daemon, name_of(server.url))
            assert (await probe(daemon, target=server.url))[0] == 403
