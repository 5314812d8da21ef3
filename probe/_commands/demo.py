"""``flink-probe demo``: the real daemon watching the demo story's simulated cluster.

The story (``probe.testing``) plays on a fake Flink cluster on a free port; the real daemon
(state in a temporary directory) discovers and probes its jobs; a table of the Job resources
and the daemon's last events, read from its own HTTP API, is redrawn every second (one line per
change or event when the output is not a terminal). ``/metrics`` and the API answer on
``--port`` meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

import aiohttp
import anyio

from probe._cogs.errors import ExitCode
from probe._cogs.logs import configure
from probe._commands.events import event_row, table_line
from probe._commands.jobs import format_age, render_table
from probe._commands.run import Daemon
from probe._config import Config
from probe._store import StoreError
from probe.testing import FakeCluster, FakeFlinkServer, play, story_cluster, story_events

DEMO_NAMESPACE: Final = "default"
DEMO_TARGET: Final = "demo"
HEADERS: Final = ("JOB", "DEPLOYMENT", "STATE", "FLINK STATUS", "RESTARTS", "LAST UPDATE")
SHORT_ID: Final = 8
EVENTS_SHOWN: Final = 4
"""The story's last lines shown."""
DAEMON_EVENTS_SHOWN: Final = 5
"""The daemon's last events shown."""
DAEMON_EVENTS_READ: Final = 50
"""The daemon's events read at each refresh (the newest): lines of all new ones off a terminal."""
CLEAR_SCREEN: Final = "\x1b[H\x1b[J"

# The daemon's bounds on the story cluster's lags (at least as large: the rule relies on it).
OVERVIEW_MAX_AGE: Final = 0.5
METRICS_MAX_AGE: Final = 2.0
PROBE_INTERVAL: Final = 1.0
REFRESH: Final = 1.0


def demo_config(flink_url: str, state_dir: Path, port: int, speed: float = 1.0) -> Config:
    """The daemon's configuration: the fake cluster with discovery, probed every second."""
    interval = PROBE_INTERVAL / speed
    return Config.model_validate(
        {
            "server": {"listen": f"127.0.0.1:{port}"},
            "probe": {"interval": interval, "timeout": interval},
            "state": {"path": str(state_dir / "flink-probe.db")},
            "logging": {"level": "warning", "format": "console"},
            "targets": [
                {
                    "name": DEMO_TARGET,
                    "url": flink_url,
                    "discover": True,
                    "namespace": DEMO_NAMESPACE,
                    "overview_max_age": OVERVIEW_MAX_AGE / speed,
                    "metrics_max_age": METRICS_MAX_AGE / speed,
                }
            ],
        }
    )


async def run_demo(
    *,
    port: int = 9270,
    duration: float | None = None,
    out: TextIO = sys.stdout,
    speed: float = 1.0,
) -> int:
    """Run the demo until SIGINT/SIGTERM (Ctrl-C) or for `duration` seconds; returns the exit
    code (1 when the daemon cannot start, e.g. `port` is taken; 2 for a port out of range).
    `speed` plays the story and probes that many times faster (tests use it; the table is
    then redrawn faster too)."""
    if not 1 <= port <= 65535:
        print(f"flink-probe demo: --port must be 1..65535, got {port}", file=sys.stderr)
        return ExitCode.USAGE
    with tempfile.TemporaryDirectory(prefix="flink-probe-demo-") as state_dir:
        cluster = story_cluster(speed)
        async with FakeFlinkServer(cluster) as flink:
            config = demo_config(flink.url, Path(state_dir), port, speed)
            screen = _Screen(out, flink.url, f"http://127.0.0.1:{port}", interactive=out.isatty())
            return await _run(Daemon(config), cluster, screen, duration, speed)


async def _run(
    daemon: Daemon, cluster: FakeCluster, screen: _Screen, duration: float | None, speed: float
) -> int:
    code: int = ExitCode.FAILED
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(
            play, cluster, story_events(speed), anyio.sleep, screen.event, name="demo story"
        )
        tasks.start_soon(_watch, screen, REFRESH / speed, name="demo table")
        if duration is not None:
            tasks.start_soon(_stop_after, daemon, duration, name="demo duration")
        try:
            code = await daemon.run()
        except StoreError as error:
            screen.fail(str(error))
        except OSError as error:
            screen.fail(
                f"cannot listen on 127.0.0.1:{daemon.config.server.port}:"
                f" {error.strerror or error} (pick another port: flink-probe demo --port N)"
            )
        finally:
            tasks.cancel_scope.cancel()
    if code == ExitCode.OK:
        screen.finish()
    return code


async def _stop_after(daemon: Daemon, duration: float) -> None:
    await anyio.sleep(duration)
    daemon.should_exit.set()


async def _watch(screen: _Screen, refresh: float) -> None:
    """Read the daemon's Jobs and last events from its API and show them, every `refresh`
    seconds."""
    namespace = f"{screen.probe_url}/api/v1/namespaces/{DEMO_NAMESPACE}"
    timeout = aiohttp.ClientTimeout(total=max(refresh, 1.0))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                async with session.get(f"{namespace}/jobs") as response:
                    if response.status == 200:
                        screen.update((await response.json())["items"])
                limit = {"limit": str(DAEMON_EVENTS_READ)}
                async with session.get(f"{namespace}/events", params=limit) as response:
                    if response.status == 200:
                        screen.update_events((await response.json())["items"])
            screen.draw()
            await anyio.sleep(refresh)


class _Screen:
    """What the user sees: a table redrawn in place on a terminal, or lines of changes."""

    def __init__(self, out: TextIO, flink_url: str, probe_url: str, *, interactive: bool) -> None:
        self.out = out
        self.flink_url = flink_url
        self.probe_url = probe_url
        self.interactive = interactive
        self.jobs: list[dict[str, Any]] | None = None
        self.events: list[str] = []
        self.daemon_events: list[dict[str, Any]] = []
        """The daemon's newest Event resources, oldest first."""
        self._shown: dict[str, tuple[object, ...]] = {}
        self._last_event = 0
        """The resourceVersion of the newest event written as a line."""
        if not interactive:
            self._write("".join(line + "\n" for line in self._intro()))

    def update(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = jobs
        if self.interactive:
            return
        for job in jobs:
            row = _row(job, datetime.now(UTC))
            seen = tuple(row[2:5])  # state, Flink status, restarts
            if self._shown.get(row[0]) != seen:
                self._shown[row[0]] = seen
                self._write(
                    f"{_clock()}  {row[1]:<15} {row[0]}  {row[2]:<11} {row[3]:<12}"
                    f" restarts={row[4]}\n"
                )

    def update_events(self, events: list[dict[str, Any]]) -> None:
        """The daemon's newest events (newest first, as the API lists them)."""
        self.daemon_events = events[::-1]
        if self.interactive:
            return
        for event in self.daemon_events:
            version = int(event["metadata"]["resourceVersion"])
            if version > self._last_event:
                self._last_event = version
                _, reason, subject, message = event_row(event)
                self._write(f"{_clock()}  event {reason:<19} {subject:<24} {message}\n")

    def event(self, text: str) -> None:
        self.events = [*self.events, f"{_clock()}  {text}"][-EVENTS_SHOWN:]
        if not self.interactive:
            self._write(self.events[-1] + "\n")

    def draw(self) -> None:
        if self.interactive:
            self._write(CLEAR_SCREEN + self._frame())

    def finish(self) -> None:
        """The last state, once the daemon stopped."""
        if self.interactive:
            self._write(CLEAR_SCREEN + self._frame() + "flink-probe demo stopped.\n")
        else:
            self._write("\n" + self._table() + "flink-probe demo stopped.\n")

    def fail(self, message: str) -> None:
        print(f"flink-probe demo: {message}", file=sys.stderr)

    def _intro(self) -> Iterator[str]:
        yield "flink-probe demo: the real daemon, a simulated Flink cluster (Ctrl-C stops)"
        yield f"  simulated Flink REST API: {self.flink_url}/jobs/overview"
        yield f"  flink-probe:              {self.probe_url}/  (/metrics, /healthz, Job API)"
        yield f"  try:  flink-probe jobs --url {self.probe_url}"
        yield f"        flink-probe events --url {self.probe_url} --follow"
        yield f"        curl -s {self.probe_url}/metrics | grep flink_probe_job_restarts"
        yield ""

    def _frame(self) -> str:
        lines = [*self._intro(), self._table().rstrip("\n"), ""]
        lines += [f"flink-probe's last events (GET /api/v1/namespaces/{DEMO_NAMESPACE}/events):"]
        lines += self._daemon_events() or ["(none yet)"]
        lines += ["", "What happens in the simulated cluster:"]
        lines += self.events or ["(the story's events appear here)"]
        return "".join(line + "\n" for line in lines)

    def _daemon_events(self) -> list[str]:
        rows = [event_row(event) for event in self.daemon_events[-DAEMON_EVENTS_SHOWN:]]
        width = max((len(row[2]) for row in rows), default=0)
        return [table_line(row, width).rstrip("\n") for row in rows]

    def _table(self) -> str:
        if self.jobs is None:
            return "waiting for the daemon's first answer...\n"
        if not self.jobs:
            return "no Jobs yet: the daemon has not discovered the cluster's jobs\n"
        now = datetime.now(UTC)
        return render_table(HEADERS, [_row(job, now) for job in self.jobs])

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def _row(job: Mapping[str, Any], now: datetime) -> list[str]:
    metadata = job["metadata"]
    started = job["status"].get("started") or {}
    restarts = started.get("observedFlinkJobRestarts")
    updated = started.get("lastUpdateTime")
    age = (
        format_age((now - datetime.fromisoformat(updated)).total_seconds()) + " ago"
        if isinstance(updated, str)
        else "-"
    )
    return [
        str(metadata["id"])[:SHORT_ID],
        str(metadata["deploymentName"]),
        str(job["status"]["state"]),
        str(started.get("observedFlinkJobStatus", "-")),
        "-" if restarts is None else str(restarts),
        age,
    ]


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S")


def main(*, port: int = 9270, duration: float | None = None) -> int:
    """The `flink-probe demo` command: quiet logs (warnings only, on stderr), then the demo."""
    configure("warning", "console")
    try:
        return asyncio.run(run_demo(port=port, duration=duration))
    except KeyboardInterrupt:  # Ctrl-C before the daemon took over SIGINT
        return ExitCode.OK
