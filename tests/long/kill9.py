"""kill -9 the daemon at random moments of a busy run, restart it on the same state file, and
check that it opens every time and that no exposed restart count ever goes down.

    .venv/bin/python tests/long/kill9.py               # 100 kills (a few minutes)
    .venv/bin/python tests/long/kill9.py --kills 10

A fake Flink cluster (in this process) runs `--jobs` jobs that restart all the time (a random
job every few milliseconds, and a JobManager failover now and then); `flink-probe run` probes
it every 0.2 s. Each run is killed (SIGKILL) at a random moment, after between 0 and
`--max-run` seconds of answers, and started again on the same file. Every answer of the Job API
is compared with the highest count exposed for each Job by any earlier answer: the first
answer after a restart must already be at least that (a value is exposed only once stored),
and so must every later one. A Job exposed once must be there after every restart.

Prints a tally and exits 1 on any violation (a regression, a Job lost, a daemon that did not
start or exited by itself).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from daemon_harness import (
    ProbeClient,
    daemon_config,
    flink_probe_command,
    restarts_of,
    target,
    write_config,
)

from probe.testing import FakeCluster, serve_in_thread

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE = 30.0
"""Seconds a restarted daemon has to answer its first API request."""


@dataclass
class Tally:
    kills: int = 0
    restarts: int = 0
    answers: int = 0
    regressions: list[str] = field(default_factory=list)
    highest: dict[str, int] = field(default_factory=dict)
    """The highest observedFlinkJobRestarts exposed so far, per Job id."""

    def check(self, jobs: list[dict[str, Any]], when: str) -> None:
        """Compare one answer of the Job API with everything exposed before it."""
        self.answers += 1
        seen = {job["metadata"]["id"]: restarts_of(job) or 0 for job in jobs}
        for job_id, highest in self.highest.items():
            if job_id not in seen:
                self.regressions.append(f"{when}: Job {job_id} (count {highest}) is gone")
            elif seen[job_id] < highest:
                self.regressions.append(f"{when}: Job {job_id} count {highest} -> {seen[job_id]}")
        for job_id, count in seen.items():
            self.highest[job_id] = max(count, self.highest.get(job_id, 0))


@contextlib.contextmanager
def churning(cluster: FakeCluster, jids: list[str], seed: int) -> Iterator[None]:
    """Restart random jobs all the time, and fail the JobManager over every few seconds."""
    stop = threading.Event()
    rng = random.Random(seed)

    def churn() -> None:
        failover_at = time.monotonic() + 5
        while not stop.wait(0.005):
            cluster.restart(rng.choice(jids))
            if time.monotonic() >= failover_at:
                cluster.jobmanager_restart(keep_jobs=True)
                failover_at = time.monotonic() + rng.uniform(3, 8)

    thread = threading.Thread(target=churn, name="churn", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def first_answer(client: ProbeClient, daemon: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """The first answer of a (re)started daemon's Job API."""
    deadline = time.monotonic() + START_DEADLINE
    while True:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited with {daemon.returncode} before it answered")
        try:
            return client.jobs()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer within {START_DEADLINE:g} s") from None
            time.sleep(0.01)


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    tally = Tally()
    began = time.monotonic()
    cluster = FakeCluster()
    jids = [cluster.submit(f"job-{index}") for index in range(args.jobs)]
    with (
        tempfile.TemporaryDirectory(prefix="flink-probe-kill9-") as scratch,
        serve_in_thread(cluster) as fake,
        churning(cluster, jids, args.seed),
    ):
        directory = Path(scratch)
        config = daemon_config(
            directory / "state.db", [target("busy", fake.url)], interval="200ms", timeout="200ms"
        )
        config["logging"]["level"] = "warning"
        config_file = write_config(directory / "kill9.yaml", config)
        client = ProbeClient(f"http://{config['server']['listen']}")
        stderr_path = directory / "daemon.stderr"
        for run_number in range(args.kills + 1):
            with stderr_path.open("wb") as stderr:
                daemon = subprocess.Popen(
                    flink_probe_command("run", "--config", str(config_file)),
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    cwd=REPO,
                )
            try:
                if run_number:
                    tally.restarts += 1
                tally.check(first_answer(client, daemon), f"run {run_number}, first answer")
                if run_number == args.kills:
                    daemon.send_signal(signal.SIGTERM)
                    if daemon.wait(10) != 0:
                        raise RuntimeError(f"exit {daemon.returncode} on SIGTERM")
                    break
                kill_at = time.monotonic() + rng.uniform(0, args.max_run)
                while time.monotonic() < kill_at:
                    tally.check(client.jobs(), f"run {run_number}")
                if daemon.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {daemon.returncode} by itself")
                daemon.kill()
                daemon.wait()
                tally.kills += 1
            except (RuntimeError, urllib.error.URLError, ConnectionError) as error:
                print(f"FAIL: run {run_number}: {error}", file=sys.stderr)
                print(stderr_path.read_text(errors="replace")[-3000:], file=sys.stderr)
                return 1
            finally:
                if daemon.poll() is None:
                    daemon.kill()
                    daemon.wait()

    highest = max(tally.highest.values(), default=0)
    print(
        f"{tally.kills} kills, {tally.restarts} restarts, {len(tally.regressions)} regressions,"
        f" max restart count seen {highest}, total seconds {time.monotonic() - began:.0f}"
        f" ({tally.answers} answers checked, {len(tally.highest)} jobs)"
    )
    for regression in tally.regressions[:20]:
        print(f"REGRESSION: {regression}")
    return 1 if tally.regressions else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--max-run", type=float, default=1.5, help="longest run, seconds")
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(2**32)
    print(f"seed {args.seed}", flush=True)
    # A SIGTERM of this script (a CI timeout) still kills the daemon it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
