"""Run flink-probe against fake Flink clusters and look at it from the outside.

- `daemon_config(...)`, `target(...)`, `static_job(...)`: a configuration as plain data, with
  intervals short enough for tests; `write_config` writes it as YAML.
- `running_daemon(config)`: the daemon in this process and event loop (async context manager);
  `DaemonProcess`: the `flink-probe run` command in a subprocess.
- `ProbeClient`: the daemon's HTTP API (Job API, parsed `/metrics`, health); synchronous, so
  subprocess tests use it directly and in-process tests through `DaemonHandle`.
- `wait_until` / `wait_for` (async) and `wait_until_sync` / `wait_for_sync`: poll a condition
  with a deadline; a timeout names what was awaited and the last value seen.

The server's port: `server.listen` refuses port 0 (`config.split_listen` wants 1..65535), so a
free port is picked by binding a socket to port 0 first (`free_port`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.client import HTTPResponse
from pathlib import Path
from typing import Any, Self, TypeVar

import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from probe._commands.run import Daemon
from probe._config import load_config

T = TypeVar("T")

POLL_INTERVAL = 0.02
DEFAULT_WAIT = 10.0
"""Deadline of a wait; generous, since it is only reached when the test fails."""
REPO = Path(__file__).resolve().parents[2]

FAST_PROBE: Mapping[str, object] = {
    "interval": "200ms",
    "timeout": "200ms",
    "not_found_grace": 3,
    "start_timeout": "1m",
}
"""Probe settings for tests: rounds five times a second, requests fail after 200 ms."""


# -- configuration ------------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def target(
    name: str,
    url: str,
    *,
    discover: bool = True,
    namespace: str = "default",
    overview_max_age: str = "0s",
    metrics_max_age: str = "300ms",
    **extra: object,
) -> dict[str, object]:
    """A `targets:` entry; the default lags suit a fake cluster without lags."""
    return {
        "name": name,
        "url": url,
        "discover": discover,
        "namespace": namespace,
        "overview_max_age": overview_max_age,
        "metrics_max_age": metrics_max_age,
        **extra,
    }


def static_job(
    job_id: str, target_name: str, deployment: str, namespace: str = "default"
) -> dict[str, object]:
    """A `jobs:` entry."""
    return {
        "id": job_id,
        "target": target_name,
        "deployment": deployment,
        "namespace": namespace,
        "spec": {"declaredBy": "tests"},
    }


def daemon_config(
    state_path: Path,
    targets: Sequence[Mapping[str, object]],
    jobs: Sequence[Mapping[str, object]] = (),
    *,
    port: int | None = None,
    **probe: object,
) -> dict[str, Any]:
    """A whole configuration: fast probing (`FAST_PROBE`, overridden by `probe`), the state in
    `state_path`, the server on 127.0.0.1 at `port` (a free one by default)."""
    return {
        "server": {"listen": f"127.0.0.1:{port or free_port()}"},
        "probe": {**FAST_PROBE, **probe},
        "state": {"path": str(state_path)},
        "logging": {"level": "info", "format": "json"},
        "targets": [dict(t) for t in targets],
        "jobs": [dict(j) for j in jobs],
    }


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


def listen_url(config: Mapping[str, Any]) -> str:
    return f"http://{config['server']['listen']}"


# -- HTTP -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


@dataclass(frozen=True, slots=True)
class Metrics:
    """A parsed `/metrics` (Prometheus text format)."""

    samples: tuple[Sample, ...]

    @classmethod
    def parse(cls, text: str) -> Self:
        return cls(
            tuple(
                sample
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            )
        )

    def series(self, name: str, **labels: str) -> list[Sample]:
        """The samples called `name` whose labels include `labels`."""
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample matching, or None if none does."""
        found = self.series(name, **labels)
        if len(found) > 1:
            raise AssertionError(f"{len(found)} series match {name} {labels}: {found}")
        return found[0].value if found else None

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample matching (0 if none does)."""
        return sum(s.value for s in self.series(name, **labels))


class ProbeClient:
    """The daemon's HTTP interface, synchronously (urllib: no automatic decompression)."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(
        self, path: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
    ) -> Answer:
        request = urllib.request.Request(
            self.base_url + path, method=method, headers=dict(headers or {})
        )
        try:
            with self._open(request) as response:
                return Answer(response.status, dict(response.headers.items()), response.read())
        except urllib.error.HTTPError as error:
            with error:
                return Answer(error.code, dict(error.headers.items()), error.read())

    def _open(self, request: urllib.request.Request) -> HTTPResponse:
        response: HTTPResponse = urllib.request.urlopen(request, timeout=self.timeout)
        return response

    def get_json(self, path: str) -> tuple[int, Any]:
        answer = self.request(path)
        assert answer.content_type.startswith("application/json"), (path, answer)
        return answer.status, answer.json()

    def jobs(self, namespace: str = "default") -> list[dict[str, Any]]:
        status, body = self.get_json(f"/api/v1/namespaces/{namespace}/jobs")
        assert status == 200, body
        assert body["kind"] == "JobList", body
        items: list[dict[str, Any]] = body["items"]
        return items

    def job(self, job_id: str, namespace: str = "default") -> dict[str, Any] | None:
        """The Job, or None for a 404."""
        status, body = self.get_json(f"/api/v1/namespaces/{namespace}/jobs/{job_id}")
        if status == 404:
            return None
        assert status == 200, body
        job: dict[str, Any] = body
        return job

    def metrics(self) -> Metrics:
        answer = self.request("/metrics")
        assert answer.status == 200, answer
        return Metrics.parse(answer.text)

    def healthz(self) -> int:
        return self.request("/healthz").status

    def readyz(self) -> int:
        return self.request("/readyz").status


# -- Job documents --------------------------------------------------------------------------


def state_of(job: Mapping[str, Any] | None) -> str | None:
    return None if job is None else str(job["status"]["state"])


def started_of(job: Mapping[str, Any] | None) -> dict[str, Any] | None:
    started: dict[str, Any] | None = None if job is None else job["status"]["started"]
    return started


def restarts_of(job: Mapping[str, Any] | None) -> int | None:
    started = started_of(job)
    return None if started is None else int(started["observedFlinkJobRestarts"])


def flink_status_of(job: Mapping[str, Any] | None) -> str | None:
    started = started_of(job)
    return None if started is None else str(started["observedFlinkJobStatus"])


def dashed(jid: str) -> str:
    """The Job id of a discovered Flink job."""
    return f"{jid[:8]}-{jid[8:12]}-{jid[12:16]}-{jid[16:20]}-{jid[20:]}"


# -- waiting --------------------------------------------------------------------------------


class WaitTimeout(AssertionError):
    pass


def _timed_out(what: str, within: float, last: object) -> WaitTimeout:
    text = repr(last)
    if len(text) > 2000:
        text = text[:2000] + "..."
    return WaitTimeout(f"timed out after {within:g} s waiting for {what}; last value: {text}")


async def wait_for(
    fetch: Callable[[], Awaitable[T]],
    condition: Callable[[T], object],
    what: str,
    within: float = DEFAULT_WAIT,
) -> T:
    """Fetch until `condition(value)` holds and return that value; fail after `within` s."""
    deadline = time.monotonic() + within
    while True:
        value = await fetch()
        if condition(value):
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, within, value)
        await asyncio.sleep(POLL_INTERVAL)


async def wait_until(
    predicate: Callable[[], Awaitable[T | None]], what: str, within: float = DEFAULT_WAIT
) -> T:
    """Call `predicate` until it returns something truthy, and return that."""
    value = await wait_for(predicate, bool, what, within)
    assert value is not None
    return value


def wait_for_sync(
    fetch: Callable[[], T],
    condition: Callable[[T], object],
    what: str,
    within: float = DEFAULT_WAIT,
) -> T:
    """`wait_for` for synchronous tests. A fetch raising OSError (a server not up yet) counts
    as "not yet"."""
    deadline = time.monotonic() + within
    while True:
        try:
            value: object = fetch()
        except OSError as error:
            value = error
        else:
            if condition(value):  # type: ignore[arg-type]
                return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _timed_out(what, within, value)
        time.sleep(POLL_INTERVAL)


def wait_until_sync(predicate: Callable[[], T], what: str, within: float = DEFAULT_WAIT) -> T:
    return wait_for_sync(predicate, bool, what, within)


# -- the daemon in this process -------------------------------------------------------------


@dataclass
class DaemonHandle:
    """A daemon running in the test's event loop, and async access to its API."""

    daemon: Daemon
    client: ProbeClient
    task: asyncio.Task[int]

    async def request(
        self, path: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
    ) -> Answer:
        return await asyncio.to_thread(self.client.request, path, method=method, headers=headers)

    async def jobs(self, namespace: str = "default") -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.client.jobs, namespace)

    async def job(self, job_id: str, namespace: str = "default") -> dict[str, Any] | None:
        return await asyncio.to_thread(self.client.job, job_id, namespace)

    async def metrics(self) -> Metrics:
        return await asyncio.to_thread(self.client.metrics)

    async def wait_job(
        self,
        job_id: str,
        condition: Callable[[dict[str, Any] | None], object],
        what: str,
        *,
        namespace: str = "default",
        within: float = DEFAULT_WAIT,
    ) -> dict[str, Any]:
        """The Job once `condition` holds for it (the last one seen is in a timeout)."""
        job = await wait_for(
            lambda: self.job(job_id, namespace), condition, f"job {job_id}: {what}", within
        )
        assert job is not None
        return job

    async def wait_state(
        self,
        job_id: str,
        state: str,
        *,
        flink_status: str | None = None,
        namespace: str = "default",
    ) -> dict[str, Any]:
        """The Job once in `state` (and, if given, with `flink_status` observed)."""

        def reached(job: dict[str, Any] | None) -> bool:
            wanted_status = flink_status is None or flink_status_of(job) == flink_status
            return state_of(job) == state and wanted_status

        what = f"state {state}" + (f" with Flink status {flink_status}" if flink_status else "")
        return await self.wait_job(job_id, reached, what, namespace=namespace)

    async def wait_metrics(self, condition: Callable[[Metrics], object], what: str) -> Metrics:
        """A /metrics for which `condition` holds (a probe may time out on a busy machine:
        wait for the snapshot a check needs rather than trusting the first one)."""
        return await wait_for(self.metrics, condition, f"/metrics: {what}")

    async def wait_restarts(self, job_id: str, count: int) -> dict[str, Any]:
        return await self.wait_job(job_id, lambda j: restarts_of(j) == count, f"{count} restarts")

    async def wait_probed(
        self, job_id: str, rounds: int = 2, namespace: str = "default"
    ) -> dict[str, Any]:
        """The Job after `rounds` more probes of it completed and were exposed."""
        job = await self.job(job_id, namespace)
        for _ in range(rounds):
            job = await self.wait_job(
                job_id, _updated_since(job), "another completed probe", namespace=namespace
            )
        assert job is not None
        return job


def _last_update(job: Mapping[str, Any] | None) -> object:
    started = started_of(job)
    return None if started is None else started["lastUpdateTime"]


def _updated_since(job: Mapping[str, Any] | None) -> Callable[[Mapping[str, Any] | None], bool]:
    before = _last_update(job)
    return lambda later: _last_update(later) != before


@contextlib.asynccontextmanager
async def running_daemon(
    config: Mapping[str, Any], *, stop_timeout: float = 10.0
) -> AsyncIterator[DaemonHandle]:
    """Run `Daemon(config).run()` in this event loop until the block ends, then stop it as
    SIGTERM would and check that it returned 0."""
    config_file = Path(config["state"]["path"]).with_suffix(".yaml")
    write_config(config_file, config)
    daemon = Daemon(load_config(config_file, environ={}), config_path=config_file)
    task = asyncio.create_task(daemon.run(), name="flink-probe daemon")

    async def listening() -> bool:
        if task.done():
            task.result()  # raises what stopped it
            raise AssertionError(f"the daemon returned {task.result()} before it listened")
        return daemon.bound_port is not None

    try:
        await wait_until(listening, "the daemon to listen")
    except BaseException:
        task.cancel()
        raise
    handle = DaemonHandle(daemon, ProbeClient(f"http://127.0.0.1:{daemon.bound_port}"), task)
    try:
        yield handle
    finally:
        daemon.should_exit.set()
        code = await asyncio.wait_for(task, stop_timeout)
    assert code == 0


# -- the daemon as a command ----------------------------------------------------------------


def flink_probe_command(*args: str) -> list[str]:
    """`flink-probe ARGS` with this interpreter (the console script calls the same main)."""
    return [sys.executable, "-m", "probe.cli", *args]


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        flink_probe_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=_clean_environment(),
    )


def _clean_environment() -> dict[str, str]:
    # FLINK_PROBE_... variables of the caller would override the test's file.
    return {k: v for k, v in os.environ.items() if not k.startswith("FLINK_PROBE_")}


@dataclass
class DaemonProcess:
    """`flink-probe run --config FILE` in a subprocess; stderr (the logs) goes to a file.

    Use it as a context manager: a daemon still running at the end is killed."""

    config: Mapping[str, Any]
    config_file: Path
    process: subprocess.Popen[bytes] = field(init=False)
    stderr_file: Path = field(init=False)

    def __post_init__(self) -> None:
        write_config(self.config_file, self.config)
        self.stderr_file = self.config_file.with_suffix(".stderr")
        with self.stderr_file.open("wb") as stderr:
            self.process = subprocess.Popen(
                flink_probe_command("run", "--config", str(self.config_file)),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=REPO,
                env=_clean_environment(),
            )
        self.client = ProbeClient(listen_url(self.config))

    @property
    def stderr(self) -> str:
        return self.stderr_file.read_text(encoding="utf-8", errors="replace")

    def wait_healthy(self, timeout: float = 20.0) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"flink-probe exited with {self.process.returncode}:\n{self.stderr}"
                )
            return self.client.healthz() == 200

        wait_until_sync(healthy, "GET /healthz to answer 200", timeout)

    def wait_exit(self, timeout: float = 20.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"flink-probe still running after {timeout:g} s:\n{self.stderr}"
            ) from None

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Whatever happened, no daemon outlives its test."""
        self.kill()


@contextlib.asynccontextmanager
async def sampling(
    handle: DaemonHandle, sample: Callable[[DaemonHandle], Awaitable[None]], every: float = 0.01
) -> AsyncIterator[None]:
    """Run `await sample(handle)` over and over while the block runs (and once more after)."""
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await sample(handle)
            await asyncio.sleep(every)
        await sample(handle)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        stop.set()
        await task
