"""The real daemon, `flink-probe run --config FILE`, as a subprocess watching a real cluster.

- `ProbeDaemon(workdir, flink_url, ...)`: writes `<workdir>/config.yaml` (server on a free
  port of 127.0.0.1, SQLite state and log in `workdir`, probing every 0.5 s, the target's lags
  set to the harness cluster's real bounds; no target for a `flink_url` of None, and any other
  top-level keys from `settings`), starts the daemon with this interpreter, and
  reads its API and `/metrics`. `kill9()`, `terminate()` (exit 0 asserted) and `restart()`
  (same configuration, same state file, same port). A context manager: on the way out a daemon
  still running is stopped, and if the block failed, the end of its log is printed (pytest
  shows it with the failure).
- `RestartWatch`: samples the daemon's count for one job and Flink's `numRestarts` right after
  it, and checks on every sample that the count never goes down and never exceeds what Flink
  has shown (plus the restarts of earlier JobManager epochs).
- `record_result(line)`: prints a measured result and appends it to `$REAL_SUITE_RESULTS`.

The harness cluster runs with `web.refresh-interval: 1000` and `metrics.fetcher.update-interval:
1000` (cluster.py), so `/jobs/overview` is at most 1 s old (E) and `numRestarts` at most the
fetcher interval plus the time since the previous request (the daemon asks every 0.5 s): M =
0.5 s + 1 s + a margin = 2 s.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.client import HTTPResponse
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self

from daemon_harness import (
    REPO,
    Metrics,
    ProbeClient,
    daemon_config,
    flink_status_of,
    restarts_of,
    state_of,
    target,
    write_config,
)

from .cluster import FlinkCluster, FlinkRestError
from .loopback import LOOPBACK, free_port, urlopen
from .processes import ManagedProcess
from .waiting import wait_for

TARGET: Final = "flink"
"""The daemon's name for the cluster (the `target` label, `flink-probe/target` annotation)."""
PROBE_INTERVAL: Final = "500ms"
OVERVIEW_MAX_AGE: Final = "1s"
"""E: Flink's `web.refresh-interval` in the harness cluster."""
METRICS_MAX_AGE: Final = "2s"
"""M: probe interval + `metrics.fetcher.update-interval` + a margin."""
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 20.0
SAMPLE_INTERVAL_S: Final = 0.3
SETTLED_AFTER_S: Final = 2.0
"""A final Job whose `lastUpdateTime` did not move for four probe intervals is not probed."""
FINAL_STATES: Final = frozenset({"TERMINATED", "FAILED", "FINISHED"})
RESULTS_ENV: Final = "REAL_SUITE_RESULTS"
_LOG_TAIL_CHARS: Final = 6000


def record_result(line: str) -> None:
    """Print a measured result (`pytest -s` shows it) and append it to `$REAL_SUITE_RESULTS`."""
    print(line)
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as results:
            results.write(line + "\n")


class LoopbackProbeClient(ProbeClient):
    """The daemon's HTTP API, never through an `http_proxy` of the environment."""

    def _open(self, request: urllib.request.Request) -> HTTPResponse:
        return urlopen(request, timeout=self.timeout)


def _daemon_environment() -> dict[str, str]:
    # The daemon treats every FLINK_PROBE_* variable as configuration (an unknown one is an
    # error): the test run's own (REAL_SUITE_RESULTS, FLINK_PROBE_FLINK_CACHE) must not leak.
    return {k: v for k, v in os.environ.items() if not k.startswith("FLINK_PROBE_")}


class ProbeDaemon:
    """One flink-probe daemon watching one real Flink cluster (target `flink`)."""

    def __init__(
        self,
        workdir: Path,
        flink_url: str | None,
        *,
        discover: bool = True,
        jobs: Sequence[Mapping[str, object]] = (),
        not_found_grace: int = 3,
        settings: Mapping[str, object] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.state_path = workdir / "flink-probe.db"
        self.log_path = workdir / "flink-probe.log"
        self.config_path = workdir / "config.yaml"
        self.port = free_port()
        self.config = daemon_config(
            self.state_path,
            []
            if flink_url is None
            else [
                target(
                    TARGET,
                    flink_url,
                    discover=discover,
                    overview_max_age=OVERVIEW_MAX_AGE,
                    metrics_max_age=METRICS_MAX_AGE,
                )
            ],
            jobs,
            port=self.port,
            interval=PROBE_INTERVAL,
            timeout=PROBE_INTERVAL,
            not_found_grace=not_found_grace,
            start_timeout="5m",
        )
        self.config["logging"]["level"] = "debug"
        self.config.update(settings or {})
        write_config(self.config_path, self.config)
        self.client = LoopbackProbeClient(f"http://{LOOPBACK}:{self.port}")
        self.process: ManagedProcess | None = None
        self.starts = 0

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_S) -> Self:
        """Start the daemon and return once its HTTP server answers."""
        if self.process is not None and self.process.is_running():
            raise RuntimeError(f"flink-probe is already running: {self.process}")
        self.starts += 1
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"--- test harness: start {self.starts} of flink-probe\n")
        self.process = ManagedProcess(
            f"flink-probe-{self.starts}",
            [sys.executable, "-m", "probe.cli", "run", "--config", str(self.config_path)],
            log_path=self.log_path,
            env=_daemon_environment(),
            cwd=REPO,
        )
        wait_for(self._answers, timeout, f"flink-probe to answer on port {self.port}")
        return self

    def _answers(self) -> bool:
        process = self.process
        if process is not None and not process.is_running():
            raise AssertionError(
                f"flink-probe exited with {process.returncode}:\n{self.log_tail()}"
            )
        self.client.healthz()  # any HTTP status: the server is up
        return True

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until `/readyz` answers 200 (state loaded, the target probed once)."""
        wait_for(lambda: self.client.readyz() == 200, timeout, "flink-probe /readyz 200")

    def _running(self) -> ManagedProcess:
        if self.process is None or not self.process.is_running():
            raise RuntimeError(f"flink-probe is not running:\n{self.log_tail()}")
        return self.process

    def kill9(self) -> None:
        """SIGKILL the daemon (no chance to commit anything) and reap it."""
        self._running().kill9()

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM; the daemon must exit 0 within `timeout` (it is SIGKILLed otherwise)."""
        process = self._running()
        process.terminate()
        process.wait_or_kill(time.monotonic() + timeout)
        assert process.returncode == 0, (
            f"flink-probe exited {process.returncode} after SIGTERM:\n{self.log_tail()}"
        )

    def restart(self, timeout: float = START_TIMEOUT_S) -> Self:
        """Start the daemon again on the same configuration and state file."""
        return self.start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.is_running():
            self.process.stop(STOP_TIMEOUT_S)
        if exc is not None:
            print(f"--- end of the flink-probe log ({self.log_path}):\n{self.log_tail()}")

    def log_tail(self, max_chars: int = _LOG_TAIL_CHARS) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-max_chars:]

    # ---- API -------------------------------------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        """`GET /api/v1/namespaces/default/jobs` items."""
        return self.client.jobs()

    def job(self, job_id: str) -> dict[str, Any] | None:
        """`GET /api/v1/namespaces/default/jobs/<id>`; None for a 404."""
        return self.client.job(job_id)

    def metrics(self) -> Metrics:
        """`GET /metrics`, parsed with prometheus_client's parser."""
        return self.client.metrics()

    def metrics_text(self) -> str:
        answer = self.client.request("/metrics")
        assert answer.status == 200, answer
        return answer.text

    def wait_job(
        self,
        job_id: str,
        condition: Callable[[dict[str, Any]], object],
        what: str,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Poll the Job until `condition` holds for it; return it."""

        def matching() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job is not None and condition(job) else None

        try:
            return wait_for(matching, timeout, f"Job {job_id}: {what}", interval=0.1)
        except AssertionError as timeout_error:
            raise AssertionError(f"{timeout_error}\nlast Job: {self.job(job_id)}") from None

    def wait_state(self, job_id: str, state: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait_job(job_id, lambda job: state_of(job) == state, f"state {state}", timeout)

    def wait_settled(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the Job is final and no longer probed (`wait_settled`)."""
        return wait_settled(self, job_id, timeout)


class JobSource(Protocol):
    """What serves Jobs by id: a `ProbeDaemon`, or a replica of a fleet sharing one store."""

    def job(self, job_id: str) -> dict[str, Any] | None: ...


def wait_settled(source: JobSource, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until the Job is final and no longer probed (its count is settled): its
    `lastUpdateTime` stayed the same for `SETTLED_AFTER_S`, several probe intervals."""
    last: dict[str, Any] | None = None
    unchanged_since = time.monotonic()

    def settled() -> dict[str, Any] | None:
        nonlocal last, unchanged_since
        job = source.job(job_id)
        if job is None or state_of(job) not in FINAL_STATES:
            return None
        if last is None or _last_update(job) != _last_update(last):
            last, unchanged_since = job, time.monotonic()
            return None
        return job if time.monotonic() - unchanged_since >= SETTLED_AFTER_S else None

    try:
        return wait_for(settled, timeout, f"Job {job_id} final and settled", interval=0.1)
    except AssertionError as timeout_error:
        raise AssertionError(f"{timeout_error}\nlast Job: {source.job(job_id)}") from None


def _last_update(job: Mapping[str, Any]) -> object:
    started: Mapping[str, Any] | None = job["status"]["started"]
    return None if started is None else started["lastUpdateTime"]


def job_restarts_metric(metrics: Metrics, job_id: str) -> float | None:
    """`flink_probe_job_restarts_total` of one Job (None: no series)."""
    return metrics.value("flink_probe_job_restarts_total", job_id=job_id)


# ---- restart counts over time --------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One look at the daemon, then at Flink, `at` seconds after the watch began."""

    at: float
    state: str | None
    """The Job's `status.state`; None if the daemon did not answer or has no such Job."""
    daemon: int | None
    """`observedFlinkJobRestarts`; None without `status.started` or without an answer."""
    flink_status: str | None
    """`observedFlinkJobStatus`."""
    flink: int | None
    """Flink's `numRestarts`, read after the daemon: 0 for `[]`; None if Flink did not answer."""

    def __str__(self) -> str:
        return (
            f"t={self.at:6.2f}s state={self.state} status={self.flink_status} "
            f"daemon={self.daemon} flink={self.flink}"
        )


@dataclass
class RestartWatch:
    """Samples one Job's count and Flink's own; checks on every sample that the count is
    monotonic and a lower bound: daemon <= `credit_before` + Flink's current `numRestarts`.

    `credit_before` is what earlier JobManager epochs are owed (their counts plus one per
    failover); Flink's count of the current epoch is read *after* the daemon's, and Flink
    serves one epoch's `numRestarts` in increasing order, so the daemon cannot have seen more.
    """

    daemon: JobSource
    cluster: FlinkCluster
    job_id: str
    jid: str
    credit_before: int = 0
    samples: list[Sample] = field(default_factory=list)
    highest: int = 0
    """The highest count the daemon has exposed so far."""
    _began: float = field(default_factory=time.monotonic)

    def sample(self) -> Sample:
        state: str | None = None
        count: int | None = None
        status: str | None = None
        try:
            job = self.daemon.job(self.job_id)
        except OSError:
            job = None  # the daemon is down (killed on purpose, or starting)
        if job is not None:
            state, count, status = state_of(job), restarts_of(job), flink_status_of(job)
        try:
            flink: int | None = self.cluster.num_restarts(self.jid) or 0
        except (OSError, FlinkRestError):
            flink = None  # no JobManager, a leader election (503), ...
        taken = Sample(time.monotonic() - self._began, state, count, status, flink)
        self.samples.append(taken)
        if count is not None:
            assert count >= self.highest, f"the count went down: {self.report()}"
            self.highest = count
            if flink is not None:
                bound = self.credit_before + flink
                assert count <= bound, f"the count exceeds Flink's ({bound}): {self.report()}"
        return taken

    def until(
        self, condition: Callable[[Sample], bool], what: str, timeout: float = 60.0
    ) -> Sample:
        """Sample every `SAMPLE_INTERVAL_S` until `condition` holds for a sample; return it."""
        deadline = time.monotonic() + timeout
        while True:
            taken = self.sample()
            if condition(taken):
                return taken
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what}: {self.report()}"
                )
            time.sleep(SAMPLE_INTERVAL_S)

    def caught_up(self, taken: Sample) -> bool:
        """The daemon shows everything Flink has shown (Flink read just after it)."""
        return (
            taken.daemon is not None
            and taken.flink is not None
            and taken.daemon == self.credit_before + taken.flink
        )

    def report(self, last: int = 25) -> str:
        lines = [str(s) for s in self.samples[-last:]]
        return f"{len(self.samples)} samples (credit_before={self.credit_before}), last:\n" + (
            "\n".join(lines)
        )


KILL_WITHIN_S: Final = 0.5
"""The last read of Flink's count before a JobManager kill is at most this old (well below the
restart rule's E = 1 s), so the daemon cannot have credited a later value of the old epoch."""


def kill_jobmanager_when_caught_up(
    watch: RestartWatch, cluster: FlinkCluster, and_then: Callable[[], None] = lambda: None
) -> int:
    """Once the daemon shows Flink's current count (>= 1), kill the JobManager within
    `KILL_WITHIN_S` of a read of Flink that still shows it, then `and_then()` at once; returns
    that count, which the old epoch is then owed exactly."""
    deadline = time.monotonic() + 120
    while True:
        caught_up = watch.until(
            lambda s: s.flink is not None and s.flink >= 1 and watch.caught_up(s),
            "the daemon to catch up with Flink",
            timeout=max(1.0, deadline - time.monotonic()),
        )
        asked = time.monotonic()
        try:
            again = cluster.num_restarts(watch.jid) or 0
        except (OSError, FlinkRestError):
            continue
        if again == caught_up.flink and time.monotonic() - asked < KILL_WITHIN_S:
            cluster.kill_jobmanager()
            and_then()
            return again
        # A restart came in between (or the read was slow): the daemon must catch up again.
