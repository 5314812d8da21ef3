"""The daemon's HTTP interface as clients use it: the read-only Job API, /metrics in both
exposition formats, health and readiness, the index page."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_harness import (
    DaemonHandle,
    Metrics,
    daemon_config,
    dashed,
    running_daemon,
    target,
    wait_for,
    wait_until,
)
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from probe._commands.run import STALE_INTERVALS
from probe.testing import FakeFlinkServer, FaultKind

JOBS_PATH = "/api/v1/namespaces/default/jobs"
FLINK_STATUSES = {
    "INITIALIZING",
    "CREATED",
    "RUNNING",
    "FAILING",
    "FAILED",
    "CANCELLING",
    "CANCELED",
    "FINISHED",
    "RESTARTING",
    "SUSPENDED",
    "RECONCILING",
    "UNKNOWN",
}
JOB_STATES = {"STARTING", "STARTED", "TERMINATING", "TERMINATED", "FAILED", "FINISHED"}


@dataclass(frozen=True)
class Served:
    daemon: DaemonHandle
    running: str
    """Job id of the running job."""
    failed: str
    """Job id of the failed job."""


@pytest.fixture
async def served(fake_flink: FakeFlinkServer, state_path: Path) -> AsyncIterator[Served]:
    """A daemon watching two discovered jobs: one running (2 restarts), one failed."""
    cluster = fake_flink.cluster
    running = cluster.submit("orders")
    cluster.restart(running, n=2)
    failed = cluster.submit("broken-etl")
    cluster.fail(failed, "the input topic does not exist")
    # The fake has no lags: a short metrics_max_age makes the count appear sooner.
    config = daemon_config(state_path, [target("prod", fake_flink.url, metrics_max_age="100ms")])
    async with running_daemon(config) as daemon:
        await daemon.wait_restarts(dashed(running), 2)
        await daemon.wait_state(dashed(failed), "FAILED")
        yield Served(daemon, dashed(running), dashed(failed))


def cluster_answered(metrics: Metrics, job_id: str) -> bool:
    return (
        metrics.value("flink_probe_target_up", target="prod") == 1
        and metrics.value("flink_probe_job_status", job_id=job_id, status="RUNNING") == 1
    )


async def test_job_list_and_jobs(served: Served) -> None:
    daemon = served.daemon
    answer = await daemon.request(JOBS_PATH)
    assert answer.status == 200
    assert answer.content_type.startswith("application/json")
    body = answer.json()
    assert set(body) == {"kind", "metadata", "items"}
    assert body["kind"] == "JobList"
    assert body["metadata"]["resourceVersion"] >= 1
    items = body["items"]
    assert {item["metadata"]["id"] for item in items} == {served.running, served.failed}
    for item in items:
        assert (item["apiVersion"], item["kind"]) == ("v1", "Job")
        assert set(item) == {"apiVersion", "kind", "metadata", "spec", "status"}
        assert await daemon.job(item["metadata"]["id"]) == item
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", item["metadata"]["createdAt"]
        )

    running = await daemon.job(served.running)
    assert running is not None
    assert running["status"]["started"]["observedFlinkJobRestarts"] == 2
    assert running["status"]["started"]["flinkJobId"] == served.running.replace("-", "")

    elsewhere = (await daemon.request("/api/v1/namespaces/elsewhere/jobs")).json()
    assert (elsewhere["kind"], elsewhere["items"]) == ("JobList", [])


async def test_errors_are_json(served: Served) -> None:
    daemon = served.daemon
    unknown = [
        f"{JOBS_PATH}/00000000-0000-0000-0000-000000000000",
        f"{JOBS_PATH}/not-a-uuid",
        f"{JOBS_PATH}/{'0' * 31}",
        f"/api/v1/namespaces/elsewhere/jobs/{served.running}",
        "/no/such/path",
    ]
    for path in unknown:
        answer = await daemon.request(path)
        assert answer.status == 404, path
        assert answer.content_type.startswith("application/json"), path
        assert answer.json()["error"]["code"] == 404, path

    # Jobs are managed by the daemon alone (the failed Job is final: it never changes).
    before = await daemon.job(served.failed)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in (JOBS_PATH, f"{JOBS_PATH}/{served.failed}"):
            answer = await daemon.request(path, method=method)
            assert answer.status == 405, (method, path)
            assert answer.content_type.startswith("application/json"), (method, path)
            assert answer.json()["error"]["code"] == 405, (method, path)
    assert await daemon.job(served.failed) == before
    assert {job["metadata"]["id"] for job in await daemon.jobs()} == {served.running, served.failed}


async def test_metrics_in_text_and_openmetrics_formats(served: Served) -> None:
    daemon = served.daemon
    # A snapshot taken while the cluster answered (a probe may time out on a busy machine).
    text = await wait_for(
        lambda: daemon.request("/metrics"),
        lambda answer: cluster_answered(Metrics.parse(answer.text), served.running),
        "a scrape of the target up and the job RUNNING",
    )
    assert text.status == 200
    assert text.content_type.startswith("text/plain")
    assert "version=0.0.4" in text.content_type
    assert "Content-Encoding" not in text.headers
    metrics = Metrics.parse(text.text)

    labels = {"job_id": served.running}
    restarts = metrics.series("flink_probe_job_restarts_total", **labels)
    assert len(restarts) == 1
    assert restarts[0].value == 2
    assert restarts[0].labels == {
        "namespace": "default",
        "deployment": "orders",
        "job_id": served.running,
        "flink_job_id": served.running.replace("-", ""),
        "target": "prod",
    }
    status = metrics.series("flink_probe_job_status", **labels)
    assert {s.labels["status"] for s in status} == FLINK_STATUSES
    assert {s.labels["status"]: s.value for s in status if s.value} == {"RUNNING": 1.0}
    state = metrics.series("flink_probe_job_state", **labels)
    assert {s.labels["state"] for s in state} == JOB_STATES
    assert {s.labels["state"]: s.value for s in state if s.value} == {"STARTED": 1.0}
    assert metrics.value("flink_probe_job_state", job_id=served.failed, state="FAILED") == 1.0
    assert metrics.value("flink_probe_target_up", target="prod") == 1.0
    assert metrics.series("flink_probe_job_last_probe_timestamp_seconds", **labels)
    # Per-job values come from the probe loop, and the HELP text says so.
    help_line = next(
        line
        for line in text.text.splitlines()
        if line.startswith("# HELP flink_probe_job_restarts")
    )
    assert "not fetched at scrape time" in help_line

    openmetrics = await daemon.request(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert openmetrics.status == 200
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    parsed = openmetrics_families(openmetrics.text)  # type: ignore[no-untyped-call]
    families = {family.name: family for family in parsed}
    restarts_family = families["flink_probe_job_restarts"]
    assert restarts_family.type == "counter"
    assert [s.value for s in restarts_family.samples if s.labels["job_id"] == served.running] == [2]

    compressed = await daemon.request("/metrics", headers={"Accept-Encoding": "gzip"})
    assert compressed.headers.get("Content-Encoding") == "gzip"
    unpacked = Metrics.parse(gzip.decompress(compressed.body).decode())
    assert unpacked.value("flink_probe_job_restarts_total", job_id=served.running) == 2


async def test_promtool_accepts_the_metrics(served: Served, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI (apt-get install prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    body = (await served.daemon.request("/metrics")).body
    check = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(check.communicate(body), 30)
    assert check.returncode == 0, output.decode()


async def test_health_and_the_index_page(served: Served) -> None:
    daemon = served.daemon
    health = await daemon.request("/healthz")
    assert (health.status, health.json()) == (200, {"status": "ok"})
    ready = await daemon.request("/readyz")
    assert (ready.status, ready.json()) == (
        200,
        {
            "ready": True,
            "checks": {"targetsProbed": True, "storeWritable": True, "leasesSettled": True},
        },
    )

    index = await daemon.request("/")
    assert index.status == 200
    assert index.content_type.startswith("text/html")
    links = re.findall(r'href="([^"]+)"', index.text)
    assert {"/metrics", "/healthz", "/readyz", JOBS_PATH} <= set(links)
    for link in links:
        assert (await daemon.request(link)).status == 200, link


async def test_readyz_waits_until_every_target_was_probed(
    fake_flink: FakeFlinkServer, state_path: Path
) -> None:
    """Not ready while the first round hangs; ready once it ended, answered or not."""
    fake_flink.cluster.set_fault("*", FaultKind.HANG)
    config = daemon_config(
        state_path, [target("hanging", fake_flink.url)], interval="500ms", timeout="500ms"
    )
    async with running_daemon(config) as daemon:
        not_ready = await daemon.request("/readyz")
        # Only the failing check: the store is writable.
        assert (not_ready.status, not_ready.json()) == (
            503,
            {"ready": False, "checks": {"targetsProbed": False}},
        )
        assert (await daemon.request("/healthz")).status == 200
        assert (await daemon.request("/metrics")).status == 200

        async def ready() -> bool:
            return (await daemon.request("/readyz")).status == 200

        await wait_until(ready, "/readyz to answer 200 after the first round timed out")
        metrics = await daemon.metrics()
        assert metrics.value("flink_probe_target_up", target="hanging") == 0.0


async def test_healthz_stays_ok_without_targets(state_path: Path) -> None:
    """A daemon with no targets (it serves its history) has no probe loop that could stall."""
    config = daemon_config(state_path, [], interval="100ms", timeout="100ms")
    async with running_daemon(config) as daemon:
        # Time must pass for staleness to show: longer than the loop may stay silent.
        await asyncio.sleep((STALE_INTERVALS + 2) * 0.1)
        health = await daemon.request("/healthz")
        assert (health.status, health.json()) == (200, {"status": "ok"})
        assert (await daemon.request("/readyz")).status == 200
