"""One scenario, start to end: tier, floor, daemon warm-up, measured windows, start-up, stop.

Windows (each a whole number of intervals, so every target has exactly that many rounds due):

1. *steady*: probing only, nothing scrapes; CPU, probes done vs due, lag, store writes.
2. *render*: ``/metrics`` scraped a few times back to back, plain and gzip; time and size.
3. *scraped*: ``/metrics`` scraped every ``scrape_period`` while probing; the lag of rounds due
   while a scrape was in flight against the others.
4. *profile* (optional): py-spy while probing, then while scraping back to back.

Then the daemon is stopped (SIGTERM; the log tells its last commit, every Job at once) and,
for scenarios that ask, started again on the same store to time start-up with every Job
already in it. The store is a SQLite file, or a database of the run's private PostgreSQL
server (``bench/database.py``); ``bench/replicas.py`` runs several daemons sharing one.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from . import code, profile, promtext
from .daemon import Daemon
from .machine import (
    CoreTimes,
    busy_share,
    core_times,
    load_average,
    placement,
    thread_waits,
    wait_between,
)
from .rounds import Commit, LagModel, Round, in_window, percentile
from .subject import (
    DaemonProcess,
    JobSource,
    StoreKind,
    daemon_environment,
    job_uuid,
    write_config,
)
from .tier import RESTARTS, FakeFlinkTier, ServerKind, free_ports

if TYPE_CHECKING:  # PostgreSQL (psycopg, the test kit) only for a postgresql scenario
    from probe.testing.postgres import Database

    from .database import DatabaseServer

LAG = "flink_probe_scheduler_lag_seconds"
LAG_GOAL = 0.25
"""Seconds: the lag goal's bound, one of the histogram's bucket bounds."""
METRICS_MAX_AGE_MARGIN = 10.0
"""The daemon's default metrics_max_age is interval + 10 s: counts are credited after it."""
METRICS_REFRESH = 60.0
"""The daemon's default probe.metrics_refresh: the longest a quiet Job's count goes unread."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    targets: int
    jobs: int
    interval: float
    intervals: int
    """Intervals measured per window."""
    startup: bool
    """Restart the daemon on this scenario's store and time its start-up."""
    profile: bool
    floor_requests: int
    """About how many requests the floor measures."""
    renders: int
    """Scrapes per encoding in the render window."""
    floor_repeats: int = 3
    """Floor runs per event loop; the least CPU per request counts."""
    metrics_max_age: float | None = None
    """The targets' ``metrics_max_age`` (M: counts are credited M after a job is first seen);
    None: the daemon's default, interval + 10 s. The quick run shortens it to warm up fast."""
    metrics_refresh: float | None = None
    """``probe.metrics_refresh`` (None: the daemon's default, 1 m). A Job whose target changed
    hands is credited again only from a fresh read: the quick run reads every round (0)."""
    store: StoreKind = "sqlite"
    replicas: int = 1
    """Daemons sharing the store (PostgreSQL), each holding ``targets / replicas`` of the
    targets (``targets`` and ``jobs`` are the totals); more than one: ``bench/replicas.py``."""


@dataclass(frozen=True, slots=True)
class Options:
    server: ServerKind
    source: JobSource
    uvloop: bool
    floor_uvloop: bool
    tier_cpu: int | None
    daemon_cpu: int | None
    profile_seconds: float
    scrape_period: float | None
    """None: one scrape per interval."""
    nice: int = 0
    """Added to the niceness of the tier, the floor and the daemon (negative: needs root)."""
    code: Path | None = None
    """Where the daemon's ``probe`` package comes from (None: the working tree)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A measured stretch of time: what the daemon used, and how busy its core was."""

    start: float
    end: float
    cpu: float
    cpu_wait: float
    """Seconds the daemon's threads were runnable but waited for a CPU."""
    tier_cpu_wait: float
    """The same for the tier's worker (nginx)."""
    core_busy: float | None
    database_cpu: float | None = None
    """CPU seconds of the PostgreSQL server (None: SQLite)."""


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p99, max and mean in ms."""
    return {
        "p50": _ms(percentile(values, 0.5)),
        "p99": _ms(percentile(values, 0.99)),
        "max": _ms(max(values) if values else None),
        "mean": _ms(sum(values) / len(values) if values else None),
        "count": len(values),
    }


class ScenarioRun:
    """One scenario with one daemon (``bench/replicas.py``: several)."""

    def __init__(
        self,
        scenario: Scenario,
        options: Options,
        workdir: Path,
        say: Callable[[str], None],
        database: DatabaseServer | None = None,
    ):
        self.s = scenario
        self.o = options
        self.workdir = workdir
        self.say = say
        self.database = database
        """The run's PostgreSQL server: the store of a ``postgresql`` scenario."""
        self.result: dict[str, Any] = {"scenario": asdict(scenario)}
        self.tier: FakeFlinkTier | None = None
        self.subject: Daemon | None = None
        self.started: list[Daemon] = []
        """Every daemon started (stopped at the end, whatever happened)."""
        self.session: aiohttp.ClientSession | None = None
        self.lag_model: LagModel | None = None
        self._database: Database | None = None

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def _subject(self) -> Daemon:
        assert self.subject is not None
        return self.subject

    @property
    def _daemon(self) -> DaemonProcess:
        return self._subject.process

    def _state(self, instance: str) -> dict[str, str]:
        """A daemon's ``state`` section: the scenario's SQLite file, or its database."""
        if self.s.store == "sqlite":
            directory = self.workdir / "state"
            directory.mkdir(exist_ok=True)
            return {"path": str(directory / "flink-probe.db")}
        if self.database is None:
            raise RuntimeError("a postgresql scenario needs the run's PostgreSQL server")
        if self._database is None:
            name = "bench_" + re.sub(r"[^a-z0-9]+", "_", self.s.name.lower())
            self._database = self.database.create(name)
        return self.database.state(self._database, instance)

    def _process(self, config: Path, log: str, port: int) -> DaemonProcess:
        return DaemonProcess(
            config,
            self.workdir / log,
            port,
            self.o.daemon_cpu,
            self.o.uvloop,
            self.o.nice,
            self.o.code,
        )

    def _write_config(self, instance: str, port: int) -> Path:
        """The configuration of one daemon (``instance``: its name in the leases)."""
        assert self.tier is not None
        s = self.s
        config = self.workdir / f"{instance}.yaml"
        write_config(
            config,
            self.tier.targets,
            interval=s.interval,
            state=self._state(instance),
            port=port,
            source=self.o.source,
            metrics_max_age=s.metrics_max_age,
            metrics_refresh=s.metrics_refresh,
        )
        return config

    # --- the scenario -------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        s = self.s
        began = time.monotonic()
        self.result["load_average"] = {"start": load_average()}
        self.say(
            f"[{s.name}] fake Flink tier: {s.targets} targets, {s.jobs} jobs ({self.o.server});"
            f" store: {s.store}"
        )
        self.tier = FakeFlinkTier(
            self.workdir, s.targets, s.jobs, self.o.server, self.o.tier_cpu, self.o.nice
        )
        self.tier.start()
        try:
            if s.floor_repeats:
                self.result["floor"] = await self._floor(s.floor_repeats)
            timeout = aiohttp.ClientTimeout(total=120)
            async with aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as session:
                self.session = session
                await self._run_daemon()
        finally:
            for subject in self.started:
                if subject.process.alive():
                    subject.process.stop()
            self.tier.stop()
        self.result["tier_errors"] = tier_errors(self.tier, self.say, s.name)
        self.result["load_average"]["end"] = load_average()
        self.result["seconds"] = round(time.monotonic() - began, 1)
        return self.result

    async def _floor(self, repeats: int = 3) -> dict[str, Any]:
        """The floor on the daemon's core, ``repeats`` times per event loop: the least CPU per
        request counts (other work on the machine only ever adds to it)."""
        assert self.tier is not None
        spec = self.workdir / "floor-spec.json"
        spec.write_text(json.dumps([[t.url, list(t.jids)] for t in self.tier.targets]))
        rounds = max(3, math.ceil(self.s.floor_requests / (self.s.jobs + self.s.targets)))
        loops = ["asyncio", "uvloop"] if self.o.floor_uvloop else ["asyncio"]
        results: dict[str, Any] = {}
        for loop in loops:
            self.say(f"[{self.s.name}] floor ({loop}): {repeats} x {rounds} rounds")
            runs = [await self._floor_once(spec, rounds, loop) for _ in range(repeats)]
            per_request = [run["cpu_seconds"] / run["requests"] * 1e6 for run in runs]
            per_overview = [
                run["overview_cpu_seconds"] / run["overview_requests"] * 1e6 for run in runs
            ]
            # A full round is one overview per target and one metrics request per job: the
            # metrics request's price is what is left once the overviews are paid.
            overviews = rounds * self.s.targets
            per_metrics = [
                (run["cpu_seconds"] * 1e6 - overview_us * overviews) / (run["requests"] - overviews)
                for run, overview_us in zip(runs, per_overview, strict=True)
            ]
            results[loop] = {
                "requests": runs[0]["requests"],
                "cpu_us_per_request": round(min(per_request), 2),
                "cpu_us_per_request_runs": [round(value, 2) for value in per_request],
                "cpu_us_per_overview": round(min(per_overview), 2),
                "cpu_us_per_metrics_request": round(min(per_metrics), 2),
                "wall_seconds_runs": [round(run["wall_seconds"], 3) for run in runs],
            }
        return results

    async def _floor_once(self, spec: Path, rounds: int, loop: str) -> dict[str, Any]:
        flags = ["--uvloop"] if loop == "uvloop" else []
        process = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "bench.floor", "--spec", str(spec), "--rounds", str(rounds)],
            *flags,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.workdir,
            env=daemon_environment(None),
            preexec_fn=placement(self.o.daemon_cpu, self.o.nice),
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"floor ({loop}) failed: {err.decode()[-1000:]}")
        figures: dict[str, Any] = json.loads(out)
        return figures

    async def _run_daemon(self) -> None:
        assert self.session is not None
        s = self.s
        port = free_ports(1)[0]
        config = self._write_config("bench", port)
        self.subject = Daemon(self._process(config, "daemon.log", port), self.session)
        self.started.append(self.subject)
        # The code may change under a long run (the working tree): say what each daemon ran.
        self.result["probe_digest"] = code.digest(self.o.code)
        self.say(f"[{s.name}] daemon: warming up (every Job STARTED, its count credited)")
        self._daemon.start()
        await self._subject.wait_http("/healthz", deadline=60)
        self.result["warmup"] = await self._warm_up([self._subject])
        memory = self._daemon.memory()
        self.result["memory"] = {
            "rss_probing_mib": mib(memory.rss_kib),
            # Before any scrape: what discovery and probing alone ever needed.
            "peak_before_scrapes_mib": mib(memory.peak_kib),
        }
        self.result["steady"] = await self._steady()
        self.result["render"] = await self._render()
        self.result["scraped"] = await self._scraped()
        if s.profile and self.o.profile_seconds > 0:
            self.result["profile"] = await self._profile()
        memory = self._daemon.memory()
        self.result["memory"] |= {
            "peak_mib": mib(memory.peak_kib),
            "rss_at_end_mib": mib(memory.rss_kib),
        }
        self.result["shutdown"] = self._stop(self._subject)
        if s.startup:
            self.result["startup"] = await self._startup(config)

    def _stop(self, subject: Daemon) -> dict[str, Any]:
        """SIGTERM: exit code, seconds, and the last commit (every Job's time is written)."""
        exit_code, seconds = subject.process.stop()
        sent = subject.process.stop_sent_at or 0.0
        last = [c for c in subject.log.commits if c.at >= sent]
        return {
            "exit_code": exit_code,
            "seconds": round(seconds, 3),
            "commit_jobs": last[-1].jobs if last else None,
            "commit_ms": _ms(last[-1].seconds) if last else None,
        }

    async def _warm_up(self, subjects: Sequence[Daemon]) -> dict[str, Any]:
        """Wait (from the logs, so nothing is scraped yet) until every Job is STARTED and its
        restart count credited by one of ``subjects``: after that nothing changes but
        lastUpdateTime. The commits so far are the store's writes of the warm-up."""
        s = self.s
        started_at = min(subject.process.started_at for subject in subjects)
        max_age = s.metrics_max_age or s.interval + METRICS_MAX_AGE_MARGIN
        budget = max_age + 4 * s.interval + 60
        if s.replicas > 1:  # a target taken over: its Jobs' counts read afresh, then credited
            refresh = METRICS_REFRESH if s.metrics_refresh is None else s.metrics_refresh
            budget += refresh + max_age
        started: set[str] = set()
        credited: set[str] = set()
        all_started_at = credited_at = None
        seen = [0] * len(subjects)
        while time.time() - started_at < budget:
            for index, subject in enumerate(subjects):
                subject.check_alive()
                events = subject.log.events
                new, seen[index] = events[seen[index] :], len(events)
                for entry in new:
                    job = str(entry.get("job_id"))
                    if (
                        entry.get("event") == "job state changed"
                        and entry.get("state") == "STARTED"
                    ):
                        started.add(job)
                    elif (
                        entry.get("event") == "job restarts increased"
                        and entry.get("restarts") == RESTARTS
                    ):
                        credited.add(job)
            now = time.time()
            if all_started_at is None and len(started) >= s.jobs:
                all_started_at = now - started_at
            if credited_at is None and len(credited) >= s.jobs:
                credited_at = now - started_at
            if all_started_at is not None and credited_at is not None:
                break
            await asyncio.sleep(min(1.0, s.interval / 4))
        complete = all_started_at is not None and credited_at is not None
        if not complete:
            self.say(
                f"[{s.name}] warning: warm-up incomplete ({len(started)} STARTED, "
                f"{len(credited)} credited of {s.jobs}); measuring anyway"
            )
        # One more interval: every target's round runs once in the settled state.
        await asyncio.sleep(s.interval)
        return {
            "complete": complete,
            "all_started_after_s": _round(all_started_at),
            "counts_credited_after_s": _round(credited_at),
            "commits": [_commits(subject.log.commits) for subject in subjects],
        }

    async def _windows(
        self,
        processes: Sequence[DaemonProcess],
        seconds: float,
        during: Callable[[float], Awaitable[None]] | None = None,
    ) -> list[Window]:
        """Sleep ``seconds`` (or run ``during(until)``) and say what each daemon used
        meanwhile."""
        tier_pid = self.tier.pids[-1] if self.tier else None
        cpu0 = [p.cpu_seconds() for p in processes]
        wait0 = [p.cpu_waits() for p in processes]
        core0, database0 = self._core(), self._database_cpu()
        tier_wait0 = thread_waits(tier_pid) if tier_pid else {}
        t0 = time.time()
        if during is None:
            await asyncio.sleep(seconds)
        else:
            await during(t0 + seconds)
        t1 = time.time()
        cpu1 = [p.cpu_seconds() for p in processes]
        wait1 = [p.cpu_waits() for p in processes]
        core1, database1 = self._core(), self._database_cpu()
        tier_wait1 = thread_waits(tier_pid) if tier_pid else {}
        database = None if database0 is None or database1 is None else database1 - database0
        return [
            Window(
                start=t0,
                end=t1,
                cpu=cpu1[i] - cpu0[i],
                cpu_wait=wait_between(wait0[i], wait1[i]),
                tier_cpu_wait=wait_between(tier_wait0, tier_wait1),
                core_busy=busy_share(core0, core1),
                database_cpu=database,
            )
            for i in range(len(processes))
        ]

    async def _window(
        self, seconds: float, during: Callable[[float], Awaitable[None]] | None = None
    ) -> Window:
        """Sleep ``seconds`` (or run ``during(until)``) and say what the daemon used meanwhile."""
        return (await self._windows([self._daemon], seconds, during))[0]

    def _core(self) -> CoreTimes:
        return core_times(self.o.daemon_cpu)

    def _database_cpu(self) -> float | None:
        if self.database is None or self.s.store != "postgresql":
            return None
        return self.database.cpu_seconds()

    @staticmethod
    def _window_figures(window: Window) -> dict[str, Any]:
        seconds = window.end - window.start
        figures = {
            "window": [round(window.start, 3), round(window.end, 3)],
            "window_s": round(seconds, 3),
            "cpu_seconds": round(window.cpu, 3),
            "cpu_share_of_core": round(window.cpu / seconds, 4),
            "core_busy_share_all_processes": _round(window.core_busy, 4),
            "daemon_waiting_for_cpu_share": round(window.cpu_wait / seconds, 4),
            "tier_waiting_for_cpu_share": round(window.tier_cpu_wait / seconds, 4),
        }
        if window.database_cpu is not None:
            figures["database_cpu_share_of_core"] = round(window.database_cpu / seconds, 4)
        return figures

    async def _wait_for_rounds(self, subject: Daemon, end: float, targets: int) -> None:
        """Until each of the daemon's ``targets`` logged its round of the window's last slot
        (a round due just before ``end`` finishes after it), or one interval plus the timeout
        has passed. Each target has exactly one slot in [end - interval, end): that round
        began after it."""
        s = self.s
        deadline = time.time() + s.interval + min(5.0, s.interval)
        while time.time() < deadline:
            await asyncio.sleep(0.2)
            recent = {r.target for r in subject.log.rounds if r.began >= end - s.interval}
            if len(recent) >= targets:
                return

    def _rounds_figures(
        self, rounds: list[Round], model: LagModel, targets: int, jobs: int
    ) -> dict[str, Any]:
        """Rounds due in a window of ``intervals`` intervals against what was due of
        ``targets`` with ``jobs`` Jobs."""
        due_windows = self.s.intervals
        lags = [model.lag(r) for r in rounds]
        return {
            "rounds_due": targets * due_windows,
            "rounds_done": len(rounds),
            "job_probes_due": jobs * due_windows,
            "job_probes_done": sum(r.jobs for r in rounds),
            "requests": sum(r.requests for r in rounds),
            "request_errors": sum(r.errors for r in rounds),
            "lag_ms": _spread(lags),
            "lag_within_goal_share": _round(
                sum(1 for lag in lags if lag <= LAG_GOAL) / len(lags) if lags else None, 5
            ),
            "round_ms": _spread([r.seconds for r in rounds]),
        }

    async def _steady(self) -> dict[str, Any]:
        s = self.s
        self.say(f"[{s.name}] steady window: {s.intervals} intervals, no scrapes")
        subject = self._subject
        before, _ = await subject.scrape()
        await asyncio.sleep(min(2.0, s.interval / 2))  # let rounds delayed by that scrape pass
        memory_before = self._daemon.memory()
        window = await self._window(s.intervals * s.interval)
        memory = self._daemon.memory()
        after, after_sent = await subject.scrape()
        await self._wait_for_rounds(subject, window.start + s.intervals * s.interval, s.targets)
        log = subject.log
        # The grid, from this quiet window's rounds (began within it, give or take a round).
        reference = [r for r in log.rounds if window.start - 1 <= r.began < window.end + 1]
        self.lag_model = LagModel(s.interval, reference)
        figures = self._steady_figures(
            subject, window, (before, after, after_sent), self.lag_model, s.targets, s.jobs
        )
        self.result["memory"]["rss_steady_mib"] = mib(max(memory.rss_kib, memory_before.rss_kib))
        return figures

    def _steady_figures(
        self,
        subject: Daemon,
        window: Window,
        scrapes: tuple[promtext.Scrape, promtext.Scrape, float],
        model: LagModel,
        targets: int,
        jobs: int,
    ) -> dict[str, Any]:
        """The steady window's figures of one daemon probing ``targets`` with ``jobs`` Jobs;
        ``scrapes``: its /metrics before and after the window, and when the latter was sent."""
        s = self.s
        before, after, after_sent = scrapes
        start, end, cpu = window.start, window.end, window.cpu
        log = subject.log
        # Due rounds are counted over exactly K intervals (the window ran a few ms longer).
        rounds = in_window(log.rounds, model, start, start + s.intervals * s.interval)
        figures = self._rounds_figures(rounds, model, targets, jobs)
        seconds = end - start
        probes = figures["job_probes_done"]
        commits = [c for c in log.commits if start <= c.at < end]
        requests_per_probe = figures["requests"] / probes if probes else None
        lag_buckets = promtext.bucket_delta(before.buckets(LAG), after.buckets(LAG))
        lag_count = after.total(f"{LAG}_count") - before.total(f"{LAG}_count")
        lag_sum = after.total(f"{LAG}_sum") - before.total(f"{LAG}_sum")
        within = dict(lag_buckets).get(LAG_GOAL)
        last_probes = after.values("flink_probe_job_last_probe_timestamp_seconds")
        stale = sum(1 for t in last_probes if after_sent - t > 1.5 * s.interval)
        started = after.total("flink_probe_jobs", state="STARTED")
        restarts = after.total("flink_probe_job_restarts_total")
        figures.update(self._window_figures(window))
        figures.update(
            {
                "steady_state_verified": started == jobs and restarts == RESTARTS * jobs,
                "jobs_started": started,
                "rounds_skipped": after.total("flink_probe_rounds_skipped_total")
                - before.total("flink_probe_rounds_skipped_total"),
                "jobs_not_probed_within_1_5_intervals": stale,
                "jobs_with_last_probe": len(last_probes),
                "lag_histogram_ms": {
                    "p50": _ms(promtext.histogram_quantile(0.5, lag_buckets)),
                    "p99": _ms(promtext.histogram_quantile(0.99, lag_buckets)),
                    "mean": _ms(lag_sum / lag_count if lag_count else None),
                    "count": lag_count,
                    "within_goal_share": _round(
                        within / lag_count if lag_count and within is not None else None, 5
                    ),
                },
                "cpu_us_per_probe": round(cpu / probes * 1e6, 1) if probes else None,
                "cpu_us_per_request": round(cpu / figures["requests"] * 1e6, 1)
                if figures["requests"]
                else None,
                "requests_per_probe": _round(requests_per_probe, 4),
                "store_commits_per_s": round(len(commits) / seconds, 2),
                "store_jobs_written_per_s": round(sum(c.jobs for c in commits) / seconds, 1),
                "commit_ms": _spread([c.seconds for c in commits]),
            }
        )
        if window.database_cpu is not None and probes:
            figures["database_cpu_us_per_probe"] = round(window.database_cpu / probes * 1e6, 1)
        floor = self.result.get("floor", {}).get("asyncio")
        if floor is not None and probes:
            # Every round asks one overview; the rest of its requests are numRestarts reads.
            floor_us = (
                figures["rounds_done"] * floor["cpu_us_per_overview"]
                + (figures["requests"] - figures["rounds_done"])
                * floor["cpu_us_per_metrics_request"]
            )
            figures["floor_us_per_probe"] = round(floor_us / probes, 1)
            figures["ratio_to_floor"] = round(
                figures["cpu_us_per_probe"] / figures["floor_us_per_probe"], 2
            )
        return figures

    async def _render(self) -> dict[str, Any]:
        s = self.s
        self.say(f"[{s.name}] /metrics render: {s.renders} scrapes plain, {s.renders} gzip")
        figures: dict[str, Any] = {}
        for encoding in ("plain", "gzip"):
            figures[encoding], body = await self._render_one(gzip=encoding == "gzip")
            if encoding == "plain":
                figures["samples"] = sum(
                    1 for line in body.split(b"\n") if line and not line.startswith(b"#")
                )
            await asyncio.sleep(min(2.0, s.interval / 2))
        return figures

    async def _render_one(self, gzip: bool) -> tuple[dict[str, Any], bytes]:
        """Figures of ``renders`` scrapes back to back, and the last body."""
        times: list[float] = []
        bodies: list[bytes] = []

        async def scrapes(_: float) -> None:
            for _ in range(self.s.renders):
                status, body, seconds = await self._subject.get("/metrics", gzip=gzip)
                if status != 200:
                    raise RuntimeError(f"/metrics answered {status}")
                times.append(seconds)
                bodies.append(body)

        window = await self._window(0, scrapes)
        # The scrapes' own CPU: the window's, less what probing costs in that time.
        probing = self.result["steady"]["cpu_share_of_core"] * (window.end - window.start)
        scrape_cpu = max(0.0, window.cpu - probing) / self.s.renders
        figures = {
            "seconds": _spread(times),
            "bytes": max(len(body) for body in bodies),
            "daemon_cpu_ms_per_scrape": round(scrape_cpu * 1000, 1),
        }
        return figures, bodies[-1]

    async def _scraped(self) -> dict[str, Any]:
        s = self.s
        period = self.o.scrape_period or s.interval
        self.say(f"[{s.name}] scraped window: {s.intervals} intervals, /metrics every {period:g} s")
        spans: list[tuple[float, float]] = []

        async def scrape_every(until: float) -> None:
            next_at = time.time()
            while time.time() < until:
                began = time.time()
                status, _, _ = await self._subject.get("/metrics", gzip=True)
                spans.append((began, time.time()))
                if status != 200:
                    raise RuntimeError(f"/metrics answered {status}")
                next_at += period
                await asyncio.sleep(max(0.0, min(next_at, until) - time.time()))

        window = await self._window(s.intervals * s.interval, scrape_every)
        window_end = window.start + s.intervals * s.interval
        await self._wait_for_rounds(self._subject, window_end, s.targets)
        assert self.lag_model is not None
        rounds = in_window(self._subject.log.rounds, self.lag_model, window.start, window_end)
        figures = self._rounds_figures(rounds, self.lag_model, s.targets, s.jobs)

        def during_scrape(r: Round) -> bool:
            due = self.lag_model.due(r) if self.lag_model else r.began
            return any(a <= due <= b for a, b in spans)

        figures.update(self._window_figures(window))
        figures.update(
            {
                "scrape_period_s": period,
                "scrapes": len(spans),
                "scrape_ms": _spread([b - a for a, b in spans]),
                "lag_ms_due_during_a_scrape": _spread(
                    [self.lag_model.lag(r) for r in rounds if during_scrape(r)]
                ),
                "lag_ms_due_outside_scrapes": _spread(
                    [self.lag_model.lag(r) for r in rounds if not during_scrape(r)]
                ),
            }
        )
        return figures

    async def _profile(self) -> dict[str, Any]:
        s = self.s
        seconds = self.o.profile_seconds
        results: dict[str, Any] = {}
        self.say(f"[{s.name}] profile: {seconds:g} s probing, then {seconds / 2:g} s of scrapes")
        path = self.workdir / "profile-probing.txt"
        problem = await asyncio.to_thread(profile.record, self._daemon.pid, seconds, path)
        results["probing"] = problem or summary(path)
        path = self.workdir / "profile-scraping.txt"
        stop = asyncio.Event()

        async def scrape_back_to_back() -> None:
            while not stop.is_set():
                await self._subject.get("/metrics", gzip=True)

        scraper = asyncio.create_task(scrape_back_to_back())
        problem = await asyncio.to_thread(profile.record, self._daemon.pid, seconds / 2, path)
        stop.set()
        await scraper
        results["scraping"] = problem or summary(path)
        return results

    async def _startup(self, config: Path) -> dict[str, Any]:
        s = self.s
        self.say(f"[{s.name}] start-up with {s.jobs} Jobs in the store")
        assert self.tier is not None
        assert self.session is not None
        process = self._process(config, "daemon-restart.log", self._daemon.port)
        self.subject = subject = Daemon(process, self.session)
        self.started.append(subject)
        some_job = job_uuid(self.tier.targets[0].jids[0])
        process.start()
        began = process.started_at
        try:
            healthz = await subject.wait_http("/healthz", deadline=60)
            api = await subject.wait_http(f"/api/v1/namespaces/default/jobs/{some_job}", 60)
            ready = await subject.wait_http("/readyz", deadline=60 + 2 * s.interval, poll=0.02)
            # Each wait starts where the previous one ended, the first right after spawning.
            memory, cpu = process.memory(), process.cpu_seconds()
            await asyncio.sleep(0.2)
            log = subject.log

            def since(event: str) -> float | None:
                at = log.first(event)
                return _round(at - began if at is not None else None)

            first_round = min((r.began for r in log.rounds), default=None)
            return {
                "jobs_in_store": s.jobs,
                "healthz_s": round(healthz, 3),
                "first_api_answer_s": round(healthz + api, 3),
                "readyz_s": round(healthz + api + ready, 3),
                "log_starting_s": since("starting"),
                "log_state_loaded_s": since("state loaded"),
                "log_listening_s": since("listening"),
                "log_ready_s": since("ready"),
                "first_round_began_s": _round(
                    first_round - began if first_round is not None else None
                ),
                "rss_after_ready_mib": mib(memory.rss_kib),
                # CPU is what a loaded machine does not inflate (wall times above it does).
                "daemon_cpu_s_at_ready": round(cpu, 3),
            }
        finally:
            self.result["restart_shutdown"] = self._stop(subject)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def tier_errors(tier: FakeFlinkTier, say: Callable[[str], None], name: str) -> int:
    errors = tier.errors()
    if errors:
        say(f"[{name}] warning: the fake Flink tier logged {errors} errors: figures are suspect")
    return errors


def mib(kib: int) -> float:
    """KiB in MiB, to a tenth."""
    return round(kib / 1024, 1)


def _commits(commits: Iterable[Commit]) -> dict[str, Any]:
    """How many commits, how many Jobs they wrote, and how long they took."""
    listed = list(commits)
    return {
        "commits": len(listed),
        "jobs": sum(c.jobs for c in listed),
        "ms": _spread([c.seconds for c in listed]),
    }


def summary(path: Path) -> dict[str, Any]:
    """A py-spy profile's summary, as the results keep it."""
    found = profile.summarise(path, top=40)
    return {
        "samples": found.samples,
        "self": [(h.function, round(h.share * 100, 1)) for h in found.self_time],
        "inclusive": [(h.function, round(h.share * 100, 1)) for h in found.inclusive],
        "inclusive_probe": [(h.function, round(h.share * 100, 1)) for h in found.inclusive_probe],
        "by_package": [(h.function, round(h.share * 100, 1)) for h in found.by_package],
    }
