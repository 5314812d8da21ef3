"""The state store and the process failing under a running daemon: a full disk, a corrupt
file at start, SIGTERM in the middle of a round, `kill -9` at random moments.

The disk-full test needs a real ENOSPC: the daemon runs as a subprocess inside a private mount
namespace (`unshare --mount`, as root) whose state directory is a small tmpfs, filled up while
it runs. The namespace is held by a `sleep` process, so the file can be inspected after the
daemon exited. A read-only remount under the running daemon is not possible: the kernel
refuses to remount a file system read-only (EBUSY) while a file on it is open for writing,
and the daemon keeps its database open (tests/unit/store/test_store.py covers EROFS at start-up).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest
from daemon_harness import (
    REPO,
    DaemonProcess,
    ProbeClient,
    daemon_config,
    dashed,
    flink_probe_command,
    free_port,
    listen_url,
    restarts_of,
    run_cli,
    started_of,
    target,
    wait_for_sync,
    wait_until_sync,
    write_config,
)

from probe.testing import Endpoint, FakeCluster, FaultKind, serve_in_thread

TMPFS_SIZE = "8m"
"""Room for the WAL of a short run (it grows until SQLite checkpoints at 1000 pages)."""
KILL9 = Path(__file__).resolve().parents[1] / "long" / "kill9.py"


def cannot_run(reason: str) -> NoReturn:
    """Skip locally; fail under CI, which runs as root where mount namespaces are allowed."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLINK_PROBE_")}


# -- a daemon whose state directory is a small tmpfs -----------------------------------------


@contextlib.contextmanager
def tmpfs_namespace(directory: Path, size: str) -> Iterator[int]:
    """A private mount namespace in which `directory` is a tmpfs of `size`, held open by a
    process whose pid is yielded (enter it with `nsenter -t PID -m`)."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        cannot_run("needs unshare and nsenter (apt-get install util-linux)")
    if os.geteuid() != 0:
        cannot_run("mounting a tmpfs in a mount namespace needs root")
    directory.mkdir()
    mount = f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(directory))}"
    holder = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"{mount} && echo mounted && exec sleep 3600",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    if holder.stdout.readline().strip() != "mounted":
        holder.wait()
        assert holder.stderr is not None
        cannot_run(f"cannot mount a tmpfs in a mount namespace here: {holder.stderr.read()}")
    try:
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def inside(holder: int, path: Path) -> Path:
    """`path` as the processes of `holder`'s mount namespace see it."""
    return Path(f"/proc/{holder}/root") / path.relative_to("/")


def fill(path: Path) -> int:
    """Write `path` until the file system is full; returns the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as filler:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += filler.write(block) or 0
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    return written


@dataclass
class NamespacedDaemon:
    """`flink-probe run` inside the mount namespace of `holder`; logs (JSON lines) to a file."""

    holder: int
    config: Mapping[str, Any]
    config_file: Path
    process: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        write_config(self.config_file, self.config)
        self.stderr_file = self.config_file.with_suffix(".stderr")
        with self.stderr_file.open("wb") as stderr:
            self.process = subprocess.Popen(
                [
                    "nsenter",
                    "-t",
                    str(self.holder),
                    "-m",
                    "--",
                    *flink_probe_command("run", "--config", str(self.config_file)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=REPO,
                env=clean_environment(),
            )
        self.client = ProbeClient(listen_url(self.config))

    def log_events(self, event: str) -> list[dict[str, Any]]:
        lines = self.stderr_file.read_text(encoding="utf-8").splitlines()
        return [entry for entry in map(json.loads, lines) if entry["event"] == event]

    def readyz(self) -> dict[str, Any]:
        answer = self.client.request("/readyz")
        body: dict[str, Any] = answer.json()
        body["httpStatus"] = answer.status
        return body

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)

    def __enter__(self) -> NamespacedDaemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def store_up(daemon: NamespacedDaemon) -> float | None:
    return daemon.client.metrics().value("flink_probe_store_up")


def rounds(daemon: NamespacedDaemon) -> float:
    return daemon.client.metrics().total("flink_probe_probes_total")


def without_times(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Jobs without `lastUpdateTime`."""
    return [
        job | {"status": job["status"] | {"started": started | {"lastUpdateTime": None}}}
        if (started := job["status"].get("started"))
        else job
        for job in jobs
    ]


def last_update(job: Mapping[str, Any] | None) -> datetime:
    started = started_of(job)
    assert started is not None, job
    return datetime.fromisoformat(started["lastUpdateTime"])


def copy_out(state_file: Path, directory: Path) -> Path:
    """Copy the state file (and a WAL beside it) into `directory`."""
    directory.mkdir()
    for suffix in ("", "-wal"):
        source = state_file.with_name(state_file.name + suffix)
        if source.exists():
            shutil.copyfile(source, directory / source.name)
    return directory / state_file.name


def quick_check(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        return [row[0] for row in db.execute("PRAGMA quick_check")]


def stored_jobs(path: Path) -> dict[str, dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT job_id, document FROM jobs").fetchall()
    return {job_id: json.loads(document)["job"] for job_id, document in rows}


def test_a_full_disk_stops_exposure_not_probing_and_writes_resume_when_space_returns(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    cluster = FakeCluster()
    jids = [cluster.submit(f"job-{index}") for index in range(5)]
    job_id = dashed(jids[0])
    with (
        tmpfs_namespace(state_dir, TMPFS_SIZE) as holder,
        serve_in_thread(cluster) as fake,
    ):
        config = daemon_config(state_dir / "flink-probe.db", [target("prod", fake.url)])
        with NamespacedDaemon(holder, config, tmp_path / "daemon.yaml") as daemon:
            wait_for_sync(daemon.readyz, lambda r: r["httpStatus"] == 200, "ready")
            cluster.restart(jids[0], n=2)
            daemon_job = wait_for_sync(
                lambda: daemon.client.job(job_id), lambda j: restarts_of(j) == 2, "2 restarts"
            )

            filler = inside(holder, state_dir / "filler")
            assert fill(filler) > 0
            cluster.restart(jids[1])  # a change to store (a quiet round stores nothing)
            ready = wait_for_sync(daemon.readyz, lambda r: r["httpStatus"] == 503, "503")
            assert ready["checks"] == {"storeWritable": False}
            assert "database or disk is full" in ready["storeError"], ready
            assert store_up(daemon) == 0
            # From here on nothing can be committed, so nothing new is shown.
            frozen = daemon.client.jobs()
            cluster.restart(jids[0])
            rounds_then = rounds(daemon)
            wait_until_sync(lambda: rounds(daemon) >= rounds_then + 5, "5 more rounds")
            metrics = daemon.client.metrics()
            assert metrics.total("flink_probe_store_failures_total") >= 2
            assert metrics.value("flink_probe_store_up") == 0
            assert daemon.client.healthz() == 200
            # (lastUpdateTime alone is shown before it is stored: it says probing is alive.)
            assert without_times(daemon.client.jobs()) == without_times(frozen), (
                "a value was exposed that is not stored"
            )

            filler.unlink()
            wait_for_sync(daemon.readyz, lambda r: r["httpStatus"] == 200, "ready again")
            assert store_up(daemon) == 1
            moved_on: dict[str, Any] | None = wait_for_sync(
                lambda: daemon.client.job(job_id), lambda j: restarts_of(j) == 3, "3 restarts"
            )
            assert moved_on is not None
            assert last_update(moved_on) > last_update(daemon_job)
            assert daemon.stop() == 0, daemon.stderr_file.read_text()

            failed = daemon.log_events("store write failed; retrying, values stay unexposed")
            assert len(failed) == 1, failed
            assert failed[0]["level"] == "error"
            assert len(daemon.log_events("store writes resumed")) == 1

        # SQLite resolves the /proc/PID/root link to "/", so it reads a copy taken through it.
        state_file = copy_out(inside(holder, state_dir / "flink-probe.db"), tmp_path / "copy")
        assert quick_check(state_file) == ["ok"]
        stored = stored_jobs(state_file)[job_id]
        assert restarts_of(stored) == 3
        assert stored["metadata"]["resourceVersion"] >= moved_on["metadata"]["resourceVersion"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_corrupt_state_file_stops_the_start_and_is_left_byte_for_byte(tmp_path: Path) -> None:
    state = tmp_path / "flink-probe.db"
    state.write_bytes(random.Random(11).randbytes(48 * 1024))
    before = digest(state)
    config = write_config(tmp_path / "daemon.yaml", daemon_config(state, []))

    result = run_cli("run", "--config", str(config))

    assert result.returncode == 1, result.stderr
    messages = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert messages == [
        f"flink-probe: state file {state} is unreadable or corrupt (file is not a database"
        " (SQLITE_NOTADB)); it was left unchanged; restore it from a backup, move it aside,"
        " or use another state.path"
    ]
    assert digest(state) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "daemon.yaml",
        "flink-probe.db",
        "flink-probe.db.lock",
    ]


# -- the process -----------------------------------------------------------------------------


def test_sigterm_during_a_round_lets_it_finish_and_stores_it(tmp_path: Path) -> None:
    """SIGTERM while a round waits on a hanging numRestarts request: the request times out
    (probe.timeout), the round ends, is stored, and the daemon exits 0 within the grace."""
    timeout = 1.0
    grace = timeout + 1.0
    state = tmp_path / "state.db"
    cluster = FakeCluster()
    jid = cluster.submit("orders")
    cluster.restart(jid, n=3)
    job_id = dashed(jid)
    prod_port = free_port()
    prod = target("prod", f"http://127.0.0.1:{prod_port}")
    # Every round asks numRestarts: the hang below catches a round in flight.
    config = daemon_config(
        state, [prod], interval=f"{timeout:g}s", timeout=f"{timeout:g}s", metrics_refresh="0s"
    )

    with contextlib.ExitStack() as processes:
        with serve_in_thread(cluster, port=prod_port):
            daemon = processes.enter_context(DaemonProcess(config, tmp_path / "first.yaml"))
            daemon.wait_healthy()
            wait_for_sync(
                lambda: daemon.client.job(job_id), lambda j: restarts_of(j) == 3, "counted"
            )
            cluster.set_fault(Endpoint.METRICS, FaultKind.HANG)
            asked = cluster.requests(Endpoint.METRICS)
            wait_until_sync(lambda: cluster.requests(Endpoint.METRICS) > asked, "a hanging request")
            exposed = daemon.client.job(job_id)
            assert exposed is not None

            signalled = time.time()
            daemon.process.send_signal(signal.SIGTERM)
            assert daemon.wait_exit(timeout=grace + 2.0) == 0, daemon.stderr

            stored = stored_jobs(state)[job_id]
            assert stored["metadata"]["resourceVersion"] >= exposed["metadata"]["resourceVersion"]
            assert last_update(stored).timestamp() > signalled, "the round in flight was not stored"
            assert (stored["status"]["state"], restarts_of(stored)) == ("STARTED", 3)

            # The same file, a daemon whose first round cannot finish: it serves what was stored.
            cluster.set_fault("*", FaultKind.HANG)
            slow = daemon_config(state, [prod], interval="30s", timeout="30s")
            again = processes.enter_context(DaemonProcess(slow, tmp_path / "second.yaml"))
            again.wait_healthy()
            assert again.client.job(job_id) == stored
        # Closing the fake ends the hanging request: the daemon stops without waiting.
        assert again.terminate() == 0, again.stderr


@pytest.mark.slow
def test_kill_9_at_random_moments_never_lowers_an_exposed_count() -> None:
    """tests/long/kill9.py, short: every restart opens the file, no exposed count goes down."""
    result = subprocess.run(
        [sys.executable, str(KILL9), "--kills", "5", "--jobs", "50"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=clean_environment(),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kills, 5 restarts, 0 regressions" in result.stdout, result.stdout
