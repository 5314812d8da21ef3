"""`flink-probe events`: a running daemon's events as a table, and `--follow`.

One daemon for the module, in this event loop, watching the fake cluster's demo scenario
(restarts, a finished and a failed job). The command runs as a user runs it, in a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from daemon_harness import (
    DEFAULT_WAIT,
    REPO,
    DaemonHandle,
    daemon_config,
    flink_probe_command,
    free_port,
    run_cli,
    running_daemon,
    target,
    wait_for,
)

from probe._commands.events import TABLE_HEADERS
from probe.testing import DEMO_JOBS, FakeCluster, FakeFlinkServer, demo_cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Daemon:
    url: str
    flink_url: str
    cluster: FakeCluster
    handle: DaemonHandle


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    state = tmp_path_factory.mktemp("events-command") / "flink-probe.db"
    cluster = demo_cluster(FakeCluster())
    async with FakeFlinkServer(cluster) as flink:
        config = daemon_config(state, [target("demo", flink.url)])
        async with running_daemon(config) as handle:

            async def reasons() -> set[tuple[str, str]]:
                answer = await handle.request("/api/v1/namespaces/default/events?limit=1000")
                return {
                    (event["metadata"]["deploymentName"], event["metadata"]["name"])
                    for event in answer.json()["items"]
                }

            await wait_for(
                reasons,
                lambda seen: (
                    {
                        ("orders", "JOB_RESTARTED"),
                        ("nightly-report", "JOB_FINISHED"),
                        ("broken-etl", "JOB_FAILED"),
                    }
                    <= seen
                ),
                "the demo scenario's events",
            )
            yield Daemon(handle.client.base_url, flink.url, cluster, handle)


@dataclass
class Result:
    code: int
    out: str
    err: str


async def events_command(url: str, *args: str) -> Result:
    """`flink-probe events --url URL ARGS`."""
    done = await asyncio.to_thread(run_cli, "events", "--url", url, *args)
    return Result(done.returncode, done.stdout, done.stderr)


def parse_line(line: str) -> dict[str, str]:
    return dict(zip(TABLE_HEADERS, re.split(r"\s{3,}", line.rstrip("\n"), maxsplit=3), strict=True))


def parse_table(text: str) -> list[dict[str, str]]:
    header, *rows = text.splitlines()
    assert re.split(r"\s{3,}", header) == list(TABLE_HEADERS)
    return [parse_line(row) for row in rows]


async def api_events(daemon: Daemon, **query: str) -> list[dict[str, Any]]:
    parameters = "&".join(f"{name}={value}" for name, value in {"limit": "1000", **query}.items())
    answer = await daemon.handle.request(f"/api/v1/namespaces/default/events?{parameters}")
    assert answer.status == 200, answer
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def as_row(event: dict[str, Any]) -> dict[str, str]:
    """The row the table shows for an event of the API."""
    metadata = event["metadata"]
    job_id = metadata["jobId"]
    return {
        "TIME": metadata["createdAt"],
        "REASON": metadata["name"],
        "JOB": f"target/{event['spec']['details']['target']}"
        if job_id is None
        else f"{metadata['deploymentName']}/{job_id[:8]}",
        "MESSAGE": event["spec"]["message"],
    }


async def test_the_table_is_every_event_oldest_first(daemon: Daemon) -> None:
    before = await api_events(daemon)
    result = await events_command(daemon.url)
    after = await api_events(daemon)
    assert (result.code, result.err) == (0, "")
    rows = parse_table(result.out)
    # Oldest first: the API's list (newest first) backwards, as of some moment in between.
    assert [as_row(event) for event in before[::-1]] == rows[: len(before)]
    assert rows == [as_row(event) for event in after[::-1]][: len(rows)]
    assert {"JOB_STARTING", "JOB_STARTED", "JOB_RESTARTED", "JOB_FINISHED", "JOB_FAILED"} <= {
        row["REASON"] for row in rows
    }
    orders = f"orders/{DEMO_JOBS['orders'][:8]}"  # the deployment, and the Job id's first 8
    restarted = next(r for r in rows if (r["JOB"], r["REASON"]) == (orders, "JOB_RESTARTED"))
    assert re.fullmatch(r"restarted, count \d+ -> \d+: .*", restarted["MESSAGE"])


async def test_the_filters(daemon: Daemon) -> None:
    by_job = await events_command(daemon.url, "--job", DEMO_JOBS["broken-etl"])  # 32 hex digits
    assert by_job.code == 0
    broken = {row["JOB"] for row in parse_table(by_job.out)}
    assert broken == {f"broken-etl/{DEMO_JOBS['broken-etl'][:8]}"}

    by_deployment = await events_command(daemon.url, "--deployment", "nightly-report")
    reasons = [row["REASON"] for row in parse_table(by_deployment.out)]
    assert reasons[0] == "JOB_STARTING"
    assert "JOB_FINISHED" in reasons

    by_reason = await events_command(daemon.url, "--reason", "job_failed")  # any case
    [failed] = parse_table(by_reason.out)
    assert failed["JOB"].startswith("broken-etl/")
    assert "the input topic" in failed["MESSAGE"]

    nowhere = await events_command(daemon.url, "-n", "nowhere")
    assert (nowhere.code, nowhere.out, nowhere.err) == (0, "", "No events in namespace nowhere.\n")


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("--job", "orders"), "argument --job: job id 'orders' is not a UUID"),
        (("--reason", "RESTARTED"), "argument --reason: invalid choice: 'RESTARTED'"),
        (("--url", "localhost:9270"), "argument --url: not an http:// or https:// URL"),
    ],
)
async def test_a_usage_mistake_is_one_line_and_exit_2(
    daemon: Daemon, args: tuple[str, ...], complaint: str
) -> None:
    done = await asyncio.to_thread(run_cli, "events", *args)
    assert (done.returncode, done.stdout) == (2, "")
    [line] = done.stderr.splitlines()
    assert line.startswith(f"flink-probe: error: {complaint}"), line
    assert line.endswith("(see flink-probe events --help)")


async def test_a_daemon_that_is_not_there_or_not_flink_probe_is_one_line_and_exit_1(
    daemon: Daemon,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    absent = await events_command(url)
    assert (absent.code, absent.out) == (1, "")
    assert absent.err == (
        f"flink-probe: cannot reach the daemon at {url}: Connection refused"
        " (is `flink-probe run` running there?)\n"
    )
    flink = await events_command(daemon.flink_url, "--follow")
    assert (flink.code, flink.out) == (1, "")
    [line] = flink.err.splitlines()
    assert "HTTP 404: not a flink-probe answer" in line


async def test_follow_prints_each_new_event_until_ctrl_c(daemon: Daemon) -> None:
    listed = await api_events(daemon, deploymentName="payments")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLINK_PROBE_")}
    process = await asyncio.create_subprocess_exec(
        *flink_probe_command("events", "--url", daemon.url, "--deployment", "payments", "-f"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=environment,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:

        async def line() -> dict[str, str]:
            assert process.stdout is not None
            text = await asyncio.wait_for(process.stdout.readline(), DEFAULT_WAIT)
            assert text, "the command ended"
            return parse_line(text.decode())

        assert await line() == dict(zip(TABLE_HEADERS, TABLE_HEADERS, strict=True))
        shown = [await line() for _ in listed]
        assert shown == [as_row(event) for event in listed[::-1]]

        payments = DEMO_JOBS["payments"]
        daemon.cluster.restart(payments)
        new = await line()
        while new["REASON"] != "JOB_RESTARTED":  # whatever else came meanwhile, then the restart
            new = await line()
        assert new["JOB"] == f"payments/{payments[:8]}"
        counts = re.match(r"restarted, count (\d+) -> (\d+): ", new["MESSAGE"])
        assert counts is not None, new
        assert int(counts[2]) > int(counts[1])
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), DEFAULT_WAIT) == 0
        assert await process.stderr.read() == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
