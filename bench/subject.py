"""The daemon under test: its configuration, its process, and what /proc says about it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .machine import placement, thread_waits
from .tier import FakeTarget, job_name

JobSource = Literal["discover", "static"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


def job_uuid(jid: str) -> str:
    return f"{jid[:8]}-{jid[8:12]}-{jid[12:16]}-{jid[16:20]}-{jid[20:]}"


def write_config(
    path: Path,
    targets: list[FakeTarget],
    *,
    interval: float,
    state_path: Path,
    port: int,
    source: JobSource,
    metrics_max_age: float | None = None,
) -> None:
    """A configuration for ``targets``: discovery of every job, or all of them declared."""
    config: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}"},
        # probe.timeout must not exceed the interval (the default 5s would, at 1s).
        "probe": {"interval": f"{interval:g}s", "timeout": f"{min(5.0, interval):g}s"},
        "state": {"path": str(state_path)},
        # debug: one `probe round` line per target and round, the source of the lag figures.
        "logging": {"level": "debug", "format": "json"},
        "targets": [
            {"name": t.name, "url": t.url, "discover": source == "discover"} for t in targets
        ],
    }
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
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command name: state is field 3; utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

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

    def stop(self, timeout: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM, then wait: (exit code, seconds to exit)."""
        if self.process is None:
            return None, 0.0
        began = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode, time.monotonic() - began

    def stderr_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
