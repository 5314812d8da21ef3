"""`flink-probe jobs`: a running daemon's Jobs as a table, JSON or YAML.

One daemon for the module, in this event loop, watching the fake cluster's demo scenario
(two running jobs, one finished, one failed) plus a declared Job in another namespace that
Flink never runs (STARTING). The command runs as a user runs it, in a subprocess (in a thread,
so that this event loop goes on serving it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from daemon_harness import (
    DaemonHandle,
    daemon_config,
    dashed,
    free_port,
    run_cli,
    running_daemon,
    static_job,
    target,
    wait_for,
)

from probe._commands.jobs import TABLE_HEADERS
from probe.testing import DEMO_JOBS, FakeCluster, FakeFlinkServer, demo_cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")

WAITING_JOB = "6b0e6a4c-2f7e-4c59-9a52-1f0e2b7d9c11"


@dataclass
class Daemon:
    url: str
    flink_url: str
    handle: DaemonHandle


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    state = tmp_path_factory.mktemp("jobs-command") / "flink-probe.db"
    async with FakeFlinkServer(demo_cluster(FakeCluster())) as flink:
        config = daemon_config(
            state,
            [target("demo", flink.url)],
            [static_job(WAITING_JOB, "demo", "waiting", namespace="team-b")],
        )
        async with running_daemon(config) as handle:

            def settled(jobs: list[dict[str, Any]]) -> bool:
                states = {j["metadata"]["deploymentName"]: j["status"] for j in jobs}
                orders = states.get("orders", {}).get("started") or {}
                return (
                    orders.get("observedFlinkJobRestarts") == 2
                    and states.get("nightly-report", {}).get("state") == "FINISHED"
                    and states.get("broken-etl", {}).get("state") == "FAILED"
                    and states.get("payments", {}).get("state") == "STARTED"
                )

            await wait_for(handle.jobs, settled, "the demo scenario to settle")
            yield Daemon(handle.client.base_url, flink.url, handle)


@dataclass
class Result:
    code: int
    out: str
    err: str


async def jobs_command(url: str, *args: str) -> Result:
    """`flink-probe jobs --url URL ARGS`."""
    done = await asyncio.to_thread(run_cli, "jobs", "--url", url, *args)
    return Result(done.returncode, done.stdout, done.stderr)


def parse_table(text: str) -> list[dict[str, str]]:
    header, *rows = text.splitlines()
    assert re.split(r"\s{2,}", header) == list(TABLE_HEADERS)
    return [dict(zip(TABLE_HEADERS, re.split(r"\s{2,}", row), strict=True)) for row in rows]


async def test_table_lists_every_job_of_the_default_namespace(daemon: Daemon) -> None:
    result = await jobs_command(daemon.url)
    assert (result.code, result.err) == (0, "")
    rows = {row["DEPLOYMENT"]: row for row in parse_table(result.out)}
    assert set(rows) == set(DEMO_JOBS)
    orders = rows["orders"]
    assert orders["ID"] == dashed(DEMO_JOBS["orders"])
    assert (orders["STATE"], orders["FLINK STATUS"], orders["RESTARTS"]) == (
        "STARTED",
        "RUNNING",
        "2",
    )
    assert orders["TARGET"] == "demo"
    assert re.fullmatch(r"\d+[smhd] ago", orders["LAST UPDATE"])
    assert re.fullmatch(r"\d+[smhd]", orders["AGE"])
    assert rows["nightly-report"]["STATE"] == "FINISHED"
    assert rows["broken-etl"]["STATE"] == "FAILED"


async def test_state_filter_is_case_insensitive(daemon: Daemon) -> None:
    result = await jobs_command(daemon.url, "--state", "failed")
    assert result.code == 0
    [row] = parse_table(result.out)
    assert (row["DEPLOYMENT"], row["STATE"], row["FLINK STATUS"]) == (
        "broken-etl",
        "FAILED",
        "FAILED",
    )


async def test_json_and_yaml_are_the_daemons_job_list(daemon: Daemon) -> None:
    api_jobs = await daemon.handle.jobs()
    as_json = await jobs_command(daemon.url, "-o", "json")
    as_yaml = await jobs_command(daemon.url, "--output", "yaml")
    assert as_json.code == as_yaml.code == 0

    def settled(jobs: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
        """Probing goes on between the requests: the ids, and the Jobs that no longer change."""
        final = [job for job in jobs if job["status"]["state"] != "STARTED"]
        return [job["metadata"]["id"] for job in jobs], final

    for listing in (json.loads(as_json.out), yaml.safe_load(as_yaml.out)):
        assert listing["kind"] == "JobList"
        assert settled(listing["items"]) == settled(api_jobs)


async def test_json_with_a_state_filter(daemon: Daemon) -> None:
    result = await jobs_command(daemon.url, "--state", "STARTED", "-o", "json")
    names = {job["metadata"]["deploymentName"] for job in json.loads(result.out)["items"]}
    assert names == {"orders", "payments", "sessionizer"}


async def test_another_namespace_and_a_job_not_started_yet(daemon: Daemon) -> None:
    result = await jobs_command(daemon.url, "-n", "team-b")
    assert result.code == 0
    [row] = parse_table(result.out)
    assert row["ID"] == WAITING_JOB
    assert (row["STATE"], row["FLINK STATUS"], row["RESTARTS"], row["LAST UPDATE"]) == (
        "STARTING",
        "-",
        "-",
        "-",
    )


async def test_no_jobs_is_said_on_stderr(daemon: Daemon) -> None:
    result = await jobs_command(daemon.url, "--namespace", "nobody")
    assert (result.code, result.out) == (0, "")
    assert result.err == "No jobs in namespace nobody.\n"
    filtered = await jobs_command(daemon.url, "--state", "TERMINATING")
    assert filtered.err == "No jobs in state TERMINATING in namespace default.\n"


async def test_a_flink_status_is_not_a_state_a_usage_error(daemon: Daemon) -> None:
    result = await jobs_command(daemon.url, "--state", "RUNNING")
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith(
        "flink-probe: error: argument --state: invalid choice: 'RUNNING' (choose from 'STARTING', "
    )
    assert result.err.endswith(" (see flink-probe jobs --help)\n")


async def test_a_daemon_that_is_not_running_is_one_line_and_exit_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = await jobs_command(url)
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        f"flink-probe: cannot reach the daemon at {url}: Connection refused"
        " (is `flink-probe run` running there?)\n"
    )


async def test_something_else_than_flink_probe_is_refused(daemon: Daemon) -> None:
    # A Flink REST API answers 404 with its own error body.
    result = await jobs_command(daemon.flink_url)
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert "HTTP 404: not a flink-probe answer" in result.err


@contextlib.asynccontextmanager
async def canned_daemon(
    answer: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[str]:
    """A server answering the Job list path with `answer`; yields its URL."""
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/default/jobs", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("body", "content_type", "complaint"),
    [
        ("<html>login</html>", "text/html", "the answer is not JSON"),
        ('{"kind": "Other", "items": []}', "application/json", "the answer is not a JobList"),
        ('{"kind": "JobList", "items": [{}]}', "application/json", "not a JobList"),
    ],
)
async def test_an_answer_of_the_wrong_shape_is_refused(
    body: str, content_type: str, complaint: str
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type=content_type)

    async with canned_daemon(answer) as url:
        result = await jobs_command(url)
    assert (result.code, result.out) == (1, "")
    assert complaint in result.err
    assert result.err.count("\n") == 1


async def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown() -> None:
    expected = "Basic " + base64.b64encode(b"ops:s3cr%t").decode()

    async def answer(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            return web.json_response(
                {"error": {"code": 401, "message": "authentication required"}}, status=401
            )
        return web.json_response({"kind": "JobList", "items": []})

    async with canned_daemon(answer) as url:
        authorized = url.replace("http://", "http://ops:s3cr%25t@")
        assert (await jobs_command(authorized)).code == 0
        wrong = await jobs_command(url.replace("http://", "http://ops:guess@"))
    assert wrong.code == 1
    assert wrong.err.endswith("HTTP 401: authentication required\n")
    assert "guess" not in wrong.err


async def test_a_daemon_error_message_is_shown(daemon: Daemon) -> None:
    # The daemon's JSON error for an unknown path.
    result = await jobs_command(daemon.url + "/no-such-prefix")
    assert result.code == 1
    assert result.err.startswith("flink-probe: http://127.0.0.1:")
    assert "HTTP 404: " in result.err
    assert "not a flink-probe answer" not in result.err
