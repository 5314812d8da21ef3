"""Thousands of targets from file_sd files: the daemon's start-up, and the cost of a re-read.

The tier serves N + 1 targets with one RUNNING job each, a hundred targets a port, told apart
by a path prefix. N of them are listed in file_sd files (one group a target, with its ``name``
label); the daemon has no configured target and a SQLite store. Measured:

- start-up: ``/healthz``; the log's ``state loaded`` (the files are read before it) and
  ``listening``; ``flink_probe_targets{source="file"}`` of the first scrape; ``/readyz`` (every
  target probed once) and the log's ``ready``; every Job discovered; CPU and RSS at ready;
- the steady state: one interval's CPU, rounds done against due, CPU per round;
- each re-read, ``edits`` times: the last file rewritten with the extra target added (until
  the log says ``target started``, then its first round), then without it (``target
  stopped``), then SIGHUP (``configuration reloaded``). Each is measured over a window (one
  interval, 10 s at most) right after a window without any change: its CPU is the difference
  (at a long interval, the probing in the two windows differs less);
- ``bench/reread.py`` at N/4, N/2 and N, pinned to the daemon's core once it stopped: the
  re-read's own steps, per target.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from . import code, profile
from .daemon import Daemon
from .machine import load_average, placement
from .rounds import epoch
from .run import Options, mib, summary, tier_errors
from .subject import (
    DaemonProcess,
    daemon_environment,
    write_config,
    write_targets_file,
    write_targets_files,
)
from .tier import FakeFlinkTier, FakeTarget, free_ports

TARGETS_PER_PORT = 10
REREAD_WINDOW = 10.0
"""Seconds at most of a window around a re-read (one interval if shorter)."""


@dataclass(frozen=True, slots=True)
class TargetFilesScenario:
    name: str
    targets: int
    files: int
    interval: float
    edits: int = 3
    """Re-reads of each kind (file grown, file shrunk, SIGHUP)."""
    profile: bool = False
    """py-spy over one interval without a change, after the re-reads."""


@dataclass(frozen=True, slots=True)
class _Change:
    """A re-read to measure: what starts it, and the log line that says it was applied."""

    kind: str
    act: Callable[[], None]
    event: str
    target: str | None


class TargetFilesRun:
    def __init__(
        self,
        scenario: TargetFilesScenario,
        options: Options,
        workdir: Path,
        say: Callable[[str], None],
    ) -> None:
        self.s = scenario
        self.o = options
        self.workdir = workdir
        self.say = say
        self.result: dict[str, Any] = {"scenario": asdict(scenario), "kind": "targets_files"}

    async def run(self) -> dict[str, Any]:
        s = self.s
        began = time.monotonic()
        self.result["load_average"] = {"start": load_average()}
        self.say(f"[{s.name}] fake Flink tier: {s.targets + 1} targets, one job each")
        tier = FakeFlinkTier(
            self.workdir,
            s.targets + 1,
            s.targets + 1,
            self.o.server,
            self.o.tier_cpu,
            self.o.nice,
            ports=math.ceil((s.targets + 1) / TARGETS_PER_PORT),
        )
        tier.start()
        try:
            timeout = aiohttp.ClientTimeout(total=120)
            async with aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as session:
                await self._run_daemon(tier.targets, session)
        finally:
            tier.stop()
        self.result["tier_errors"] = tier_errors(tier, self.say, s.name)
        self.result["reread_steps"] = await self._reread_steps()
        self.result["load_average"]["end"] = load_average()
        self.result["seconds"] = round(time.monotonic() - began, 1)
        return self.result

    async def _run_daemon(self, targets: list[FakeTarget], session: aiohttp.ClientSession) -> None:
        s = self.s
        listed = [(t.name, t.url) for t in targets[: s.targets]]
        extra = targets[s.targets]
        directory = self.workdir / "targets"
        files = write_targets_files(directory, listed, s.files)
        last_file = files[-1]
        last_listed = json.loads(last_file.read_text())
        last_pairs = [(group["labels"]["name"], group["targets"][0]) for group in last_listed]
        port = free_ports(1)[0]
        config = self.workdir / "flink-probe.yaml"
        (self.workdir / "state").mkdir()
        write_config(
            config,
            [],
            interval=s.interval,
            state={"path": str(self.workdir / "state" / "flink-probe.db")},
            port=port,
            source="discover",
            targets_files=[str(directory / "*.json")],
        )
        process = DaemonProcess(
            config,
            self.workdir / "daemon.log",
            port,
            self.o.daemon_cpu,
            self.o.uvloop,
            self.o.nice,
            self.o.code,
        )
        daemon = Daemon(process, session)
        self.result["probe_digest"] = code.digest(self.o.code)
        self.say(f"[{s.name}] daemon: start-up with {s.targets} targets in {s.files} files")
        process.start()
        try:
            self.result["startup"] = await self._startup(daemon)
            # Every target's first regular round (the re-reads' windows are at most as long).
            await asyncio.sleep(min(s.interval, REREAD_WINDOW))
            self.say(f"[{s.name}] re-reads: {s.edits} x (file grown, file shrunk, SIGHUP)")
            changes = []
            for _ in range(s.edits):
                changes += [
                    _Change(
                        "file_grown",
                        lambda: write_targets_file(
                            last_file, [*last_pairs, (extra.name, extra.url)]
                        ),
                        "target started",
                        extra.name,
                    ),
                    _Change(
                        "file_shrunk",
                        lambda: write_targets_file(last_file, last_pairs),
                        "target stopped",
                        extra.name,
                    ),
                    _Change(
                        "sighup",
                        lambda: os.kill(process.pid, signal.SIGHUP),
                        "configuration reloaded",
                        None,
                    ),
                ]
            measured = [await self._reread(daemon, change) for change in changes]
            self.result["steady"] = _steady(measured, s)
            self.result["rereads"] = _rereads(measured)
            if s.profile and self.o.profile_seconds > 0:
                self.result["profile"] = {"steady": await self._profile(process)}
            memory = process.memory()
            self.result["memory"] = {
                "rss_at_end_mib": mib(memory.rss_kib),
                "peak_mib": mib(memory.peak_kib),
            }
        finally:
            exit_code, seconds = process.stop()
            self.result["shutdown"] = {"exit_code": exit_code, "seconds": round(seconds, 3)}

    async def _startup(self, daemon: Daemon) -> dict[str, Any]:
        s = self.s
        began = daemon.process.started_at
        # A target whose first round failed is retried an interval later: two of them, at most
        # a minute each (at a long interval the re-reads are measured without waiting).
        deadline = 120 + 2 * min(s.interval, 60.0)
        healthz = await daemon.wait_http("/healthz", deadline=deadline)
        scrape, _ = await daemon.scrape()
        known = scrape.total("flink_probe_targets", source="file")
        ready = await daemon.wait_http("/readyz", deadline=deadline, poll=0.05)
        memory, cpu = daemon.process.memory(), daemon.process.cpu_seconds()
        discovered_at = await self._all_discovered(daemon, began + deadline)
        await _logged(daemon, "ready", None, began, began + deadline)
        log = daemon.log

        def since(event: str) -> float | None:
            at = log.first(event)
            return None if at is None else round(at - began, 3)

        return {
            "targets_in_files": s.targets,
            "healthz_s": round(healthz, 3),
            "targets_known_at_first_scrape": known,
            "readyz_s": round(healthz + ready, 3),
            "log_starting_s": since("starting"),
            "log_state_loaded_s": since("state loaded"),
            "log_listening_s": since("listening"),
            "log_ready_s": since("ready"),
            "all_jobs_discovered_s": None
            if discovered_at is None
            else round(discovered_at - began, 3),
            "daemon_cpu_s_at_ready": round(cpu, 3),
            "rss_after_ready_mib": mib(memory.rss_kib),
        }

    async def _all_discovered(self, daemon: Daemon, deadline: float) -> float | None:
        """When the last of the targets' Jobs was discovered (None: not by ``deadline``)."""
        while time.time() < deadline:
            daemon.check_alive()
            found = [e for e in daemon.log.events if e.get("event") == "job discovered"]
            if len(found) >= self.s.targets:
                return max(_at(e) for e in found)
            await asyncio.sleep(0.5)
        return None

    async def _reread(self, daemon: Daemon, change: _Change) -> dict[str, Any]:
        """A window without a change, then the change and a window as long: CPU of each, and
        when the log said the change was applied."""
        s = self.s
        process = daemon.process
        seconds = min(s.interval, REREAD_WINDOW)
        quiet = await _cpu_over(process, seconds)
        seen: list[float] = []

        async def apply(until: float) -> None:
            began = time.time()
            change.act()
            at = await _logged(daemon, change.event, change.target, began, until + seconds)
            if at is not None:
                seen.append(at - began)
            await asyncio.sleep(max(0.0, until - time.time()))

        busy = await _cpu_over(process, seconds, apply)
        rounds = [r for r in daemon.log.rounds if quiet.start <= r.began + r.seconds < quiet.end]
        figures: dict[str, Any] = {
            "kind": change.kind,
            "quiet_cpu_s": round(quiet.cpu, 3),
            "quiet_rounds": len(rounds),
            "quiet_window_s": round(quiet.end - quiet.start, 3),
            "cpu_s": round(
                busy.cpu - quiet.cpu * (busy.end - busy.start) / (quiet.end - quiet.start), 3
            ),
            "applied_after_s": round(seen[0], 3) if seen else None,
        }
        if change.kind == "file_grown" and change.target is not None:
            first = [
                r for r in daemon.log.rounds if r.target == change.target and r.began >= busy.start
            ]
            figures["first_round_after_s"] = (
                round(first[0].began - busy.start, 3) if first else None
            )
        return figures

    async def _profile(self, process: DaemonProcess) -> dict[str, Any] | str:
        self.say(f"[{self.s.name}] profile: {self.s.interval:g} s without a change")
        path = self.workdir / "profile-steady.txt"
        problem = await asyncio.to_thread(profile.record, process.pid, self.s.interval, path)
        return problem or summary(path)

    async def _reread_steps(self) -> dict[str, Any]:
        """``bench/reread.py`` at a quarter, half and all of the targets, on the daemon's core."""
        sizes = sorted({max(1, self.s.targets // 4), max(1, self.s.targets // 2), self.s.targets})
        self.say(f"[{self.s.name}] re-read steps in one process at {sizes} targets")
        command = [
            sys.executable,
            "-m",
            "bench.reread",
            "--dir",
            str(self.workdir / "reread"),
            "--sizes",
            ",".join(map(str, sizes)),
            "--files",
            str(self.s.files),
            "--interval",
            f"{self.s.interval:g}",
        ]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.workdir,
            env=daemon_environment(self.o.code),
            preexec_fn=placement(self.o.daemon_cpu, self.o.nice),
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"bench.reread failed: {err.decode()[-1000:]}")
        steps: dict[str, Any] = json.loads(out)
        return steps


@dataclass(frozen=True, slots=True)
class _Usage:
    start: float
    end: float
    cpu: float


async def _cpu_over(
    process: DaemonProcess,
    seconds: float,
    during: Callable[[float], Awaitable[None]] | None = None,
) -> _Usage:
    """The daemon's CPU over ``seconds`` (while ``during(until)`` runs, if given)."""
    cpu0, t0 = process.cpu_seconds(), time.time()
    if during is None:
        await asyncio.sleep(seconds)
    else:
        await during(t0 + seconds)
    return _Usage(t0, time.time(), process.cpu_seconds() - cpu0)


async def _logged(
    daemon: Daemon, event: str, target: str | None, after: float, deadline: float
) -> float | None:
    """When the log first said ``event`` (about ``target``) after ``after``; None: not by
    ``deadline``."""
    while time.time() < deadline:
        for entry in reversed(daemon.log.events):
            if "timestamp" not in entry or _at(entry) < after:
                break
            if entry.get("event") == event and (target is None or entry.get("target") == target):
                return _at(entry)
        await asyncio.sleep(0.05)
    return None


def _at(entry: dict[str, object]) -> float:
    return epoch(str(entry["timestamp"]))


def _steady(measured: list[dict[str, Any]], scenario: TargetFilesScenario) -> dict[str, Any]:
    """The windows without a change: CPU, rounds done in an interval's time against due (one
    per target)."""
    shares = [m["quiet_cpu_s"] / m["quiet_window_s"] for m in measured]
    rounds = [m["quiet_rounds"] * scenario.interval / m["quiet_window_s"] for m in measured]
    per_round = [m["quiet_cpu_s"] / m["quiet_rounds"] for m in measured if m["quiet_rounds"]]
    return {
        "windows": len(measured),
        "cpu_share_of_core": round(statistics.median(shares), 4),
        "rounds_done_per_interval": round(statistics.median(rounds)),
        "rounds_due_per_interval": scenario.targets,
        "cpu_us_per_round": round(statistics.median(per_round) * 1e6, 1) if per_round else None,
    }


def _rereads(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind of re-read: its CPU and how soon it was applied (median, and every run)."""
    figures: dict[str, Any] = {}
    for kind in dict.fromkeys(m["kind"] for m in measured):
        runs = [m for m in measured if m["kind"] == kind]
        figures[kind] = {
            key: {
                "median": _median([m[key] for m in runs]),
                "runs": [m[key] for m in runs],
            }
            for key in ("cpu_s", "applied_after_s", "first_round_after_s")
            if key in runs[0]
        }
    return figures


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None
