"""`flink-probe demo`: the real daemon against the simulated cluster, shown as a table.

The story runs four times faster than a user sees it (``speed=4``), so the whole of it (restarts,
a finished and a failed job, a JobManager failover) plays in a few seconds.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
from typing import Any

import pytest
from daemon_harness import ProbeClient, free_port, run_cli, wait_for

from probe._commands.demo import CLEAR_SCREEN, run_demo
from probe.testing import DEMO_JOBS

SPEED = 4.0
STORY_DEADLINE = 20.0


class Terminal(io.StringIO):
    """What the demo writes to when a user runs it in a terminal."""

    def isatty(self) -> bool:
        return True


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of the last table in `text`, by deployment."""
    lines = text.splitlines()
    header = max(i for i, line in enumerate(lines) if line.startswith("JOB "))
    rows: dict[str, list[str]] = {}
    for line in lines[header + 1 :]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != 6:
            break
        rows[cells[1]] = cells
    return rows


def story_told(jobs: list[dict[str, Any]]) -> bool:
    by_name = {job["metadata"]["deploymentName"]: job for job in jobs}
    if set(by_name) != set(DEMO_JOBS):
        return False

    def restarts(name: str) -> int:
        started = by_name[name]["status"]["started"] or {}
        return int(started.get("observedFlinkJobRestarts", 0))

    return (
        restarts("orders") > 0
        and restarts("payments") > 0
        and restarts("sessionizer") >= 1  # the JobManager failover, counted once
        and by_name["nightly-report"]["status"]["state"] == "FINISHED"
        and by_name["broken-etl"]["status"]["state"] == "FAILED"
    )


async def test_demo_shows_restarts_and_final_states_until_ctrl_c() -> None:
    port = free_port()
    out = io.StringIO()
    demo = asyncio.create_task(run_demo(port=port, out=out, speed=SPEED))
    client = ProbeClient(f"http://127.0.0.1:{port}")

    async def jobs() -> list[dict[str, Any]]:
        try:
            return await asyncio.to_thread(client.jobs)
        except OSError:  # not listening yet
            return []

    api_jobs = await wait_for(jobs, story_told, "the demo story to be told", STORY_DEADLINE)
    metrics = await asyncio.to_thread(client.metrics)
    assert metrics.total("flink_probe_job_restarts_total") > 0

    async def printed() -> str:
        return out.getvalue()

    # Under the changes, the daemon's own events (from its API): why each Job changed.
    await wait_for(
        printed,
        lambda text: (
            {
                ("JOB_RESTARTED", "orders"),
                ("JOB_FINISHED", "nightly-report"),
                ("JOB_FAILED", "broken-etl"),
            }
            <= set(re.findall(r"  event (\w+) +([\w-]+)/[0-9a-f]{8} ", text))
        ),
        "the daemon's events printed",
        STORY_DEADLINE,
    )

    # The daemon listens, so it handles SIGINT now (as Ctrl-C in the terminal).
    os.kill(os.getpid(), signal.SIGINT)
    assert await asyncio.wait_for(demo, STORY_DEADLINE) == 0

    text = out.getvalue()
    assert CLEAR_SCREEN not in text, "a pipe gets plain lines, not terminal redraws"
    assert "Flink: JobManager failover" in text
    assert text.rstrip().endswith("flink-probe demo stopped.")
    rows = table_rows(text)
    assert set(rows) == set(DEMO_JOBS)
    assert int(rows["orders"][4]) > 0
    assert int(rows["payments"][4]) > 0
    assert rows["nightly-report"][2:4] == ["FINISHED", "FINISHED"]
    assert rows["broken-etl"][2:4] == ["FAILED", "FAILED"]
    # The table shows what the API says (the short id is the Job id's first 8 characters).
    api_ids = {job["metadata"]["deploymentName"]: job["metadata"]["id"] for job in api_jobs}
    assert rows["orders"][0] == api_ids["orders"][:8]


async def test_demo_redraws_a_table_on_a_terminal_and_stops_after_its_duration() -> None:
    terminal = Terminal()
    code = await asyncio.wait_for(
        run_demo(port=free_port(), duration=3 / SPEED, out=terminal, speed=SPEED),
        STORY_DEADLINE,
    )
    assert code == 0
    frames = terminal.getvalue().split(CLEAR_SCREEN)
    assert len(frames) >= 3, "the table is redrawn in place"
    last = frames[-1]
    assert "flink-probe demo stopped." in last
    assert "flink-probe's last events (GET /api/v1/namespaces/default/events):" in last
    assert set(table_rows(last)) == set(DEMO_JOBS)


def test_demo_on_a_taken_port_fails_with_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("demo", "--port", str(port), "--duration", "5")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"flink-probe demo: cannot listen on 127.0.0.1:{port}: ")
    assert line.endswith("(pick another port: flink-probe demo --port N)")


async def test_demo_refuses_a_port_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_demo(port=70000, duration=0, out=io.StringIO()) == 2
    assert capsys.readouterr().err == "flink-probe demo: --port must be 1..65535, got 70000\n"
