"""``flink-probe demo``: the real daemon watching a simulated Flink cluster, no setup needed.

A newcomer runs one command and within seconds sees what flink-probe does: a fake Flink 2.3
cluster (`probe.testing`, on a free port) plays a short story, the real daemon (`Daemon`,
in this process, state in a temporary directory) discovers and probes its jobs, and a table
of the Job resources, read from the daemon's own HTTP API, is redrawn every second. Meanwhile
``/metrics`` and the Job API answer on ``--port`` like those of a production daemon.

The story (seconds after the start):

- ``orders`` and ``payments`` restart every 3 and 4 seconds (task failures Flink recovers);
- ``sessionizer`` runs without a hitch;
- ``broken-etl`` restarts twice, then fails for good at 5 s (Job FAILED, reason FlinkJobFailed);
- ``nightly-report`` finishes at 3 s (Job FINISHED);
- at 12 s the JobManager fails over (high availability): every running job gets a new
  ``start-time`` and Flink's ``numRestarts`` starts again from 0, while the daemon's count
  goes on and counts the failover itself as one more restart.

On a terminal the table is redrawn in place; otherwise (a pipe, a file) one line is printed
per change, and the final table at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

import aiohttp
import anyio

from probe._cogs.errors import ExitCode
from probe._cogs.logs import configure
from probe._commands.jobs import format_age, render_table
from probe._commands.run import Daemon
from probe._config import Config
from probe._store import StoreError
from probe.testing import FakeCluster, FakeFlinkServer

DEMO_NAMESPACE: Final = "default"
DEMO_TARGET: Final = "demo"
HEADERS: Final = ("JOB", "DEPLOYMENT", "STATE", "FLINK STATUS", "RESTARTS", "LAST UPDATE")
SHORT_ID: Final = 8
EVENTS_SHOWN: Final = 4
CLEAR_SCREEN: Final = "\x1b[H\x1b[J"

# Fixed Flink job ids, so that the Job ids (the same, dashed) are the same at every run.
JIDS: Final = {
    "orders": "3f1da3c86f22430f9200eda014ea5319",
    "payments": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
    "sessionizer": "5e5510a12e5e4f0b8c1d2e3f4a5b6c7d",
    "nightly-report": "0f0e0d0c0b0a09080706050403020100",
    "broken-etl": "deadbeefdeadbeefdeadbeefdeadbeef",
}
RESTART_PERIODS: Final = {"orders": 3.0, "payments": 4.0}
FINISH_AT: Final = 3.0
BROKEN_RESTARTS_AT: Final = (1.0, 2.0)
FAIL_AT: Final = 5.0
FAILOVER_AT: Final = 12.0

# The simulated cluster's caches, and the daemon's bounds on them (at least as large: the
# restart rule relies on it). Real Flink: 3 s and 10 s, which only delay the first counts.
OVERVIEW_LAG: Final = 0.5
METRICS_LAG: Final = 1.0
OVERVIEW_MAX_AGE: Final = 0.5
METRICS_MAX_AGE: Final = 2.0
PROBE_INTERVAL: Final = 1.0
REFRESH: Final = 1.0


@dataclass(order=True, frozen=True, slots=True)
class _Event:
    at: float
    order: int
    act: Callable[[FakeCluster], None] = field(compare=False)
    say: str | None = field(compare=False)
    """What to tell the user (None: a routine restart, visible in the table anyway)."""
    every: float | None = field(compare=False, default=None)


def _story(speed: float) -> list[_Event]:
    """The scenario's first events; periodic ones schedule their next occurrence."""
    events = [
        _Event(
            FINISH_AT / speed,
            1,
            lambda c: c.finish(JIDS["nightly-report"]),
            "Flink: nightly-report finished",
        ),
        _Event(
            FAIL_AT / speed,
            2,
            lambda c: c.fail(JIDS["broken-etl"], "the input topic 'clicks' does not exist"),
            "Flink: broken-etl failed (no more restarts allowed)",
        ),
        _Event(
            FAILOVER_AT / speed,
            3,
            lambda c: c.jobmanager_restart(keep_jobs=True),
            "Flink: JobManager failover, numRestarts back to 0; flink-probe adds 1",
        ),
    ]
    events += [
        _Event(at / speed, 10 + i, lambda c: c.restart(JIDS["broken-etl"]), None)
        for i, at in enumerate(BROKEN_RESTARTS_AT)
    ]
    events += [
        _Event(period / speed, 20 + i, _restarter(name), None, every=period / speed)
        for i, (name, period) in enumerate(RESTART_PERIODS.items())
    ]
    return events


def _restarter(name: str) -> Callable[[FakeCluster], None]:
    def restart(cluster: FakeCluster) -> None:
        cluster.restart(JIDS[name], message=f"{name}: a task failed (demo)")

    return restart


def story_cluster(speed: float = 1.0) -> FakeCluster:
    """The simulated cluster at the start of the story: five running jobs."""
    cluster = FakeCluster(overview_lag=OVERVIEW_LAG / speed, metrics_lag=METRICS_LAG / speed)
    for name, jid in JIDS.items():
        cluster.submit(name, jid)
    return cluster


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
        tasks.start_soon(_play, cluster, _story(speed), screen.event, name="demo story")
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


async def _play(
    cluster: FakeCluster, events: Sequence[_Event], announce: Callable[[str], None]
) -> None:
    """Act the story out on the cluster, on time (events due together run in order)."""
    start = time.monotonic()
    pending = list(events)
    heapq.heapify(pending)
    while pending:
        event = heapq.heappop(pending)
        await anyio.sleep(max(0.0, start + event.at - time.monotonic()))
        event.act(cluster)
        if event.say is not None:
            announce(event.say)
        if event.every is not None:
            heapq.heappush(
                pending, _Event(event.at + event.every, event.order, event.act, None, event.every)
            )


async def _watch(screen: _Screen, refresh: float) -> None:
    """Read the daemon's Job API and show it, every `refresh` seconds."""
    url = f"{screen.probe_url}/api/v1/namespaces/{DEMO_NAMESPACE}/jobs"
    timeout = aiohttp.ClientTimeout(total=max(refresh, 1.0))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                async with session.get(url) as response:
                    if response.status == 200:
                        screen.update((await response.json())["items"])
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
        self._shown: dict[str, tuple[object, ...]] = {}
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
        yield f"        curl -s {self.probe_url}/metrics | grep flink_probe_job_restarts"
        yield ""

    def _frame(self) -> str:
        lines = [*self._intro(), self._table().rstrip("\n"), ""]
        lines += self.events or ["(the story's events appear here)"]
        return "".join(line + "\n" for line in lines)

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
