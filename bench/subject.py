"""The daemon under test: its configuration, its process, and what /proc says about it."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .machine import cpu_times, placement, thread_waits
from .tier import FakeTarget, job_name

JobSource = Literal["discover", "static"]
StoreKind = Literal["sqlite", "postgresql"]

ROOT = Path(__file__).resolve().parent.parent


def job_uuid(jid: str) -> str:
    return f"{jid[:8]}-{jid[8:12]}-{jid[12:16]}-{jid[16:20]}-{jid[20:]}"


def write_config(
    path: Path,
    targets: list[FakeTarget],
    *,
    interval: float,
    state: Mapping[str, str],
    port: int,
    source: JobSource,
    metrics_max_age: float | None = None,
    metrics_refresh: float | None = None,
    targets_files: Sequence[str] = (),
) -> None:
    """A configuration for ``targets`` (and those of ``targets_files``): discovery of every
    job, or all of them declared; ``state`` is its section (a SQLite file or a database)."""
    config: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}"},
        # probe.timeout must not exceed the interval (the default 5s would, at 1s).
        "probe": {"interval": f"{interval:g}s", "timeout": f"{min(5.0, interval):g}s"},
        "state": dict(state),
        # debug: one `probe round` line per target and round, the source of the lag figures.
        "logging": {"level": "debug", "format": "json"},
        "targets": [
            {"name": t.name, "url": t.url, "discover": source == "discover"} for t in targets
        ],
    }
    if metrics_refresh is not None:
        config["probe"]["metrics_refresh"] = f"{metrics_refresh:g}s"
    if targets_files:
        config["targets_files"] = list(targets_files)
    if metrics_max_age is not None:
        for target in config["targets"]:
            target["metrics_max_age"] = f"{metrics_max_age:g}s"
    if source == "static":
        config["jobs"] = [
            {
                "id": job_uuid(jid),
                "target": target.name,
                "deployment": job_name(int(target.name[1:]), index),
            }
            for target in targets
            for index, jid in enumerate(target.jids)
        ]
    # JSON is YAML: a large configuration is written (and read) quickly.
    path.write_text(json.dumps(config, indent=1))


def write_targets_file(path: Path, targets: Sequence[tuple[str, str]]) -> None:
    """A file_sd JSON file listing ``targets`` (name, URL), one group each with its ``name``
    label; written aside and renamed, as a careful tool does (never seen half-written)."""
    groups = [
        {"targets": [url], "labels": {"name": name, "namespace": "bench"}} for name, url in targets
    ]
    aside = path.with_name(path.name + ".tmp")  # not matched by the `*.json` glob
    aside.write_text(json.dumps(groups, indent=1))
    os.replace(aside, path)


def write_targets_files(
    directory: Path, targets: Sequence[tuple[str, str]], files: int
) -> list[Path]:
    """``targets`` (name, URL) spread over ``files`` file_sd files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    per_file = math.ceil(len(targets) / files)
    paths = []
    for index in range(files):
        path = directory / f"targets-{index:03d}.json"
        write_targets_file(path, targets[index * per_file : (index + 1) * per_file])
        paths.append(path)
    return paths


def daemon_command(config: Path, uvloop: bool) -> list[str]:
    """``flink-probe run`` through ``bench.launch`` (see there why)."""
    flags = ["--uvloop"] if uvloop else []
    return [sys.executable, "-m", "bench.launch", *flags, "run", "--config", str(config)]


def daemon_environment(code: Path | None) -> dict[str, str]:
    """The daemon's environment: ``probe`` from ``code`` when given (ahead of the working
    tree), ``bench`` from this tree."""
    paths = [str(code)] if code is not None else []
    paths.append(str(ROOT))
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return environment


@dataclass(frozen=True, slots=True)
class Memory:
    rss_kib: int
    peak_kib: int


class DaemonProcess:
    """``flink-probe run`` as a subprocess pinned to ``cpu``; stderr (JSON logs) to a file."""

    def __init__(
        self,
        config: Path,
        log_path: Path,
        port: int,
        cpu: int | None,
        uvloop: bool,
        nice: int = 0,
        code: Path | None = None,
    ):
        self.config = config
        self.code = code
        self.nice = nice
        self.log_path = log_path
        self.port = port
        self.cpu = cpu
        self.uvloop = uvloop
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        """Wall clock (time.time) just before the process was spawned."""
        self.stop_sent_at: float | None = None
        """Wall clock when SIGTERM was sent."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.started_at = time.time()
        self.process = subprocess.Popen(
            daemon_command(self.config, self.uvloop),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            # Not the working tree: `python -m` puts the working directory first on sys.path.
            cwd=self.config.parent,
            env=daemon_environment(self.code),
            preexec_fn=placement(self.cpu, self.nice),
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """utime + stime of the process, all threads (clock-tick resolution)."""
        return cpu_times(self.pid)[0]

    def cpu_waits(self) -> dict[int, int]:
        """Per thread, how long it was runnable but waiting for a CPU (run-queue delay, ns):
        how much other work on the core held the daemon up. See ``machine.wait_between``."""
        return thread_waits(self.pid)

    def memory(self) -> Memory:
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return Memory(rss_kib=values["VmRSS"], peak_kib=values["VmHWM"])

    def terminate(self) -> None:
        """Send SIGTERM (once), without waiting: `stop` waits."""
        if self.process is not None and self.process.poll() is None and self.stop_sent_at is None:
            self.stop_sent_at = time.time()
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM (unless `terminate` sent it), then wait: (exit code, seconds to exit)."""
        if self.process is None:
            return None, 0.0
        self.terminate()
        began = self.stop_sent_at or time.time()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode, time.time() - began

    def stderr_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
