"""Soak: run flink-probe against a busy fake Flink tier until it sent N requests, and check that
its memory and file descriptors do not grow.

    .venv/bin/python tests/long/soak.py                  # 1,000,000 requests
    .venv/bin/python tests/long/soak.py --probes 50000   # a short run
    .venv/bin/python tests/long/soak.py --duration 45    # 45 s of probing (what CI runs)

The fake tier runs in a child process (its own core): `--targets` clusters of `--jobs` jobs
each, a random job restarting 50 times a second and, every 30 s, a JobManager failover. The
daemon runs as `flink-probe run` with rounds faster than it can serve (so it runs flat out,
skipping rounds); this script scrapes `/metrics` and lists the Jobs every second, as Prometheus
and a dashboard would. A probe is a request to Flink (`flink_probe_requests_total`).

RSS and open descriptors are read from /proc after a warm-up (`--warmup` requests, by default a
tenth of the run: of `--probes`, or of `--duration` when that ends it first) and at the end.
The run fails (exit 1) if RSS grew by `--max-rss-growth` (10%) or more, if descriptors other
than sockets grew, if more sockets are open than the connection pools allow (`--concurrency`
per target, plus the listener and a few scrapes), or if the daemon stopped answering or did not
exit 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from daemon_harness import (
    ProbeClient,
    daemon_config,
    flink_probe_command,
    target,
    wait_until_sync,
    write_config,
)

from probe.testing import FakeCluster, FakeFlinkServer

REPO = Path(__file__).resolve().parents[2]


# -- the fake tier (child process) -----------------------------------------------------------


async def serve_fake_tier(targets: int, jobs: int, seed: int) -> None:
    """Serve `targets` fake clusters; print their URLs as one JSON line; churn until stdin
    closes (the parent died or is done)."""
    rng = random.Random(seed)
    clusters = [FakeCluster() for _ in range(targets)]
    jids = [
        [cluster.submit(f"job-{t}-{j}") for j in range(jobs)] for t, cluster in enumerate(clusters)
    ]
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(FakeFlinkServer(c)) for c in clusters]
        print(json.dumps([server.url for server in servers]), flush=True)
        stdin_closed = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(sys.stdin.fileno(), stdin_closed.set)
        last_failover = time.monotonic()
        while not stdin_closed.is_set():
            await asyncio.sleep(0.005)
            index = rng.randrange(targets)
            clusters[index].restart(rng.choice(jids[index]))
            if time.monotonic() - last_failover > 30:
                rng.choice(clusters).jobmanager_restart(keep_jobs=True)
                last_failover = time.monotonic()


# -- the soak --------------------------------------------------------------------------------


SOCKET_SLACK = 8
"""Sockets beyond the connection pools to Flink: the listener, scrapes, one being replaced."""


@dataclass(frozen=True, slots=True)
class Footprint:
    rss_kib: int
    sockets: int
    other_fds: int
    """Files, pipes, eventfds: anything but a socket (the store, its WAL, the lock, ...)."""
    requests: int
    at: float


def footprint(pid: int, requests: int) -> Footprint:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    sockets = other = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed while listed
            if os.readlink(fd).startswith("socket:"):
                sockets += 1
            else:
                other += 1
    return Footprint(rss, sockets, other, requests, time.monotonic())


@contextlib.contextmanager
def fake_tier(targets: int, jobs: int, seed: int) -> Iterator[list[str]]:
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "fake",
            "--targets",
            str(targets),
            "--jobs",
            str(jobs),
            "--seed",
            str(seed),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        urls: list[str] = json.loads(child.stdout.readline())
        yield urls
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def soak(args: argparse.Namespace) -> int:
    warmup = args.warmup if args.warmup is not None else args.probes // 10
    began = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="flink-probe-soak-") as scratch,
        fake_tier(args.targets, args.jobs, args.seed) as urls,
    ):
        directory = Path(scratch)
        config = daemon_config(
            directory / "state.db",
            [target(f"cluster-{i}", url) for i, url in enumerate(urls)],
            interval=f"{args.interval}s",
            timeout="2s" if args.interval >= 2 else f"{args.interval}s",
            concurrency=args.concurrency,
            per_target_concurrency=args.concurrency,
        )
        config["logging"]["level"] = "warning"
        config_file = write_config(directory / "soak.yaml", config)
        client = ProbeClient(f"http://{config['server']['listen']}", timeout=30)
        with (directory / "daemon.stderr").open("wb") as stderr:
            daemon = subprocess.Popen(
                flink_probe_command("run", "--config", str(config_file)),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=REPO,
            )
        try:
            wait_until_sync(lambda: client.healthz() == 200, "the daemon to answer", 30)
            probing_since = time.monotonic()
            run_for = math.inf if args.duration is None else args.duration
            start: Footprint | None = None
            requests = 0
            last_report = 0.0
            while requests < args.probes and time.monotonic() - probing_since < run_for:
                if daemon.poll() is not None:
                    print(f"FAIL: the daemon exited with {daemon.returncode}", file=sys.stderr)
                    print(daemon_log_tail(directory), file=sys.stderr)
                    return 1
                metrics = client.metrics()
                jobs = client.jobs()
                requests = int(metrics.total("flink_probe_requests_total"))
                warm = requests >= warmup or time.monotonic() - probing_since >= run_for / 10
                if start is None and warm:
                    start = footprint(daemon.pid, requests)
                    print(f"warm: {describe(start)}, {len(jobs)} jobs", flush=True)
                if time.monotonic() - last_report >= 60:
                    print(f"  {describe(footprint(daemon.pid, requests))}", flush=True)
                    last_report = time.monotonic()
                time.sleep(1)
            end = footprint(daemon.pid, requests)
            skipped = metrics.total("flink_probe_rounds_skipped_total")
            failed = metrics.total("flink_probe_probes_total", result="failure")
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(30)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        assert start is not None
        return report(args, start, end, skipped, failed, code, time.monotonic() - began, directory)


def daemon_log_tail(directory: Path) -> str:
    return (directory / "daemon.stderr").read_text()[-4000:]


def describe(point: Footprint) -> str:
    return (
        f"{point.requests} requests, RSS {point.rss_kib / 1024:.1f} MiB,"
        f" {point.sockets + point.other_fds} fds ({point.sockets} sockets)"
    )


def report(
    args: argparse.Namespace,
    start: Footprint,
    end: Footprint,
    skipped: float,
    failed: float,
    exit_code: int,
    seconds: float,
    directory: Path,
) -> int:
    growth = end.rss_kib / start.rss_kib - 1
    rate = (end.requests - start.requests) / (end.at - start.at)
    print(f"start: {describe(start)}")
    print(f"end:   {describe(end)}")
    print(
        f"RSS growth {growth:+.1%}, non-socket fds {start.other_fds} -> {end.other_fds},"
        f" sockets {start.sockets} -> {end.sockets}, {rate:.0f} requests/s,"
        f" {int(skipped)} rounds skipped, {int(failed)} failed rounds, exit {exit_code},"
        f" {seconds:.0f} s in total"
    )
    problems = []
    if growth >= args.max_rss_growth:
        problems.append(f"RSS grew by {growth:.1%}")
    if end.other_fds > start.other_fds:
        problems.append(
            f"descriptors other than sockets grew: {start.other_fds} -> {end.other_fds}"
        )
    # Each target's connection pool keeps up to --concurrency idle connections.
    socket_limit = args.targets * args.concurrency + SOCKET_SLACK
    if end.sockets > socket_limit:
        problems.append(f"{end.sockets} sockets open, over the bound {socket_limit}")
    if exit_code != 0:
        problems.append(f"the daemon exited with {exit_code} on SIGTERM")
        print(daemon_log_tail(directory), file=sys.stderr)
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=1_000_000, help="requests to Flink")
    parser.add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after this long, if before --probes"
    )
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=250, help="jobs per target")
    parser.add_argument("--interval", type=float, default=0.5, help="probe.interval, seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--warmup", type=int, help="requests before the first measurement")
    parser.add_argument("--max-rss-growth", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("mode", nargs="?", choices=["soak", "fake"], default="soak")
    args = parser.parse_args()
    if args.mode == "fake":
        asyncio.run(serve_fake_tier(args.targets, args.jobs, args.seed))
        return 0
    # A SIGTERM of this script (a CI timeout) still stops the daemon it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        return soak(args)
    except (urllib.error.URLError, OSError, AssertionError) as error:
        print(f"FAIL: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
