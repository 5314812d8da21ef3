"""A real standalone Flink session cluster (1 JobManager, 1 TaskManager) on 127.0.0.1.

Usage:
    with FlinkCluster("2.3.0", tmp_path) as cluster:
        jid = cluster.run_jar(cluster.upload_jar(jar), ["restart", "1000"])
        cluster.wait_for_num_restarts(jid, minimum=2)

The configuration is written to `<workdir>/conf/config.yaml`, which Flink 2.x reads and which
Flink 1.20 prefers over the legacy `flink-conf.yaml` (the harness never writes the latter).
Logs go to `<workdir>/log`; nothing is written into the Flink distribution.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

import yaml

from .flinkdist import ensure_flink
from .loopback import LOOPBACK, free_port, urlopen
from .processes import DEFAULT_STOP_TIMEOUT_S, ManagedProcess, Service, stop_all
from .waiting import wait_for

if TYPE_CHECKING:
    from .zookeeper import ZooKeeper

DEFAULT_SLOTS: Final = 8
START_TIMEOUT_S: Final = 120.0
_REQUEST_TIMEOUT_S: Final = 10.0
TERMINAL_STATES: Final = frozenset({"FAILED", "CANCELED", "FINISHED"})
_FAST_START_JVM_OPTS: Final = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
# Copied from the distribution's conf/ next to our config.yaml (log4j for start-foreground).
_SHIPPED_CONF_FILES: Final = (
    "log4j-console.properties",
    "log4j.properties",
    "log4j-cli.properties",
    "logback-console.xml",
    "logback.xml",
)


@dataclass(frozen=True)
class RestResponse:
    status: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class FlinkRestError(OSError):
    """An unexpected HTTP status. An OSError, so `wait_for` keeps polling through it (503s)."""

    def __init__(self, method: str, path: str, response: RestResponse) -> None:
        super().__init__(f"{method} {path} -> {response.status}: {response.text[:2000]}")
        self.response = response


class FlinkCluster(Service):
    """A session cluster this harness starts, restarts and stops; every process by pid."""

    def __init__(
        self,
        version: str,
        workdir: Path,
        rest_port: int | None = None,
        rpc_port: int | None = None,
        ha: ZooKeeper | None = None,
        *,
        slots: int = DEFAULT_SLOTS,
        flink_home: Path | None = None,
        extra_config: Mapping[str, str | int] | None = None,
    ) -> None:
        self.version = version
        self.workdir = workdir
        self.rest_port = rest_port if rest_port is not None else free_port()
        self.rpc_port = rpc_port if rpc_port is not None else free_port()
        self.ha = ha
        # Unique per cluster, so clusters sharing one ZooKeeper never meet.
        self.ha_cluster_id = f"/flinkprobe-{uuid.uuid4().hex[:12]}"
        self.slots = slots
        self.flink_home = flink_home if flink_home is not None else ensure_flink(version)
        self.extra_config: dict[str, str | int] = dict(extra_config or {})
        self.conf_dir = workdir / "conf"
        self.log_dir = workdir / "log"
        self.jobmanager: ManagedProcess | None = None
        self.taskmanager: ManagedProcess | None = None
        self._jobmanager_starts = 0
        self._taskmanager_starts = 0

    @property
    def rest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.rest_port}"

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_S) -> Self:
        """Write the configuration, start JobManager and TaskManager, wait for a free slot."""
        self.write_config()
        self.start_jobmanager(wait=False)
        self.start_taskmanager()
        self.wait_for_free_slots(1, timeout)
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop exactly the processes this cluster started: SIGTERM, SIGKILL after `timeout`."""
        stop_all([p for p in (self.taskmanager, self.jobmanager) if p is not None], timeout)

    def config(self) -> dict[str, str | int]:
        """The keys written to config.yaml (flat `a.b.c` keys, valid for 1.20 and 2.x)."""
        run = self.workdir
        config: dict[str, str | int] = {
            # Without the shipped --add-opens/--add-exports, job submission fails on Java 17.
            # C1-only JIT and the serial GC: a JobManager starts much sooner on a small machine.
            "env.java.opts.all": f"{self._shipped_java_opts()} {_FAST_START_JVM_OPTS}",
            "jobmanager.bind-host": LOOPBACK,
            "jobmanager.rpc.address": LOOPBACK,
            "jobmanager.rpc.port": self.rpc_port,
            "taskmanager.bind-host": LOOPBACK,
            "taskmanager.host": LOOPBACK,
            "rest.address": LOOPBACK,
            "rest.bind-address": LOOPBACK,
            "rest.port": self.rest_port,
            "jobmanager.memory.process.size": "1024m",
            "taskmanager.memory.process.size": "1024m",
            "taskmanager.memory.managed.size": "64m",
            "taskmanager.numberOfTaskSlots": self.slots,
            "parallelism.default": 1,
            "jobmanager.execution.failover-strategy": "region",
            # numRestarts lags < 1 s instead of up to 10 s; overview/detail caches 1 s.
            "metrics.fetcher.update-interval": 1000,
            "web.refresh-interval": 1000,
            "heartbeat.interval": 1000,
            "heartbeat.timeout": 5000,
            # Else a TaskManager that started before its JobManager retries after 10 s.
            "cluster.registration.error-delay": 1000,
            "io.tmp.dirs": str(run / "tmp"),
            "web.tmpdir": str(run / "webtmp"),
            # Kept across JobManager restarts, so an uploaded jar stays runnable.
            "web.upload.dir": str(run / "upload"),
            "blob.storage.directory": str(run / "blob"),
        }
        if self.ha is not None:
            config |= {
                "high-availability.type": "zookeeper",
                "high-availability.zookeeper.quorum": self.ha.connect_string,
                "high-availability.storageDir": (run / "ha").as_uri(),
                "high-availability.cluster-id": self.ha_cluster_id,
                # Under HA the JobManager's RPC port comes from this key, not rpc.port.
                "high-availability.jobmanager.port": str(self.rpc_port),
                # The default asks 60 s (ZooKeeper grants 40 s) and recovery waits that long.
                "high-availability.zookeeper.client.session-timeout": "4000ms",
            }
        config |= self.extra_config
        return config

    def write_config(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for name in _SHIPPED_CONF_FILES:
            shipped = self.flink_home / "conf" / name
            if shipped.is_file():
                (self.conf_dir / name).write_bytes(shipped.read_bytes())
        config_text = yaml.safe_dump(self.config(), sort_keys=False, width=1_000_000)
        (self.conf_dir / "config.yaml").write_text(config_text)
        for folder in ("tmp", "webtmp", "upload", "blob", "pid"):
            (self.workdir / folder).mkdir(parents=True, exist_ok=True)

    def start_jobmanager(self, *, wait: bool = True, timeout: float = START_TIMEOUT_S) -> None:
        """Start a JobManager; with `wait`, return once its REST server answers (any status:
        under HA it answers 503 until it is elected)."""
        if self.jobmanager is not None and self.jobmanager.is_running():
            raise RuntimeError(f"a JobManager is already running: {self.jobmanager}")
        self._jobmanager_starts += 1
        self.jobmanager = self._start_daemon("jobmanager", self._jobmanager_starts)
        if wait:
            wait_for(self._rest_answers, timeout, f"the JobManager REST server {self.rest_url}")

    def kill_jobmanager(self) -> None:
        """SIGKILL the JobManager and wait until its process is really gone."""
        if self.jobmanager is None:
            raise RuntimeError("no JobManager was started")
        self.jobmanager.kill9()

    def start_taskmanager(self) -> None:
        if self.taskmanager is not None and self.taskmanager.is_running():
            raise RuntimeError(f"a TaskManager is already running: {self.taskmanager}")
        self._taskmanager_starts += 1
        self.taskmanager = self._start_daemon("taskmanager", self._taskmanager_starts)

    def _start_daemon(self, kind: str, start_number: int) -> ManagedProcess:
        env = dict(os.environ)
        env |= {
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.log_dir),
            "FLINK_PID_DIR": str(self.workdir / "pid"),
        }
        # start-foreground execs java: the pid we get is the JVM's.
        return ManagedProcess(
            f"flink-{self.version}-{kind}-{start_number}",
            [str(self.flink_home / "bin" / f"{kind}.sh"), "start-foreground"],
            log_path=self.log_dir / f"{kind}-{start_number}.out",
            env=env,
            cwd=self.workdir,
        )

    def _shipped_java_opts(self) -> str:
        shipped = yaml.safe_load((self.flink_home / "conf" / "config.yaml").read_text())
        opts = shipped["env"]["java"]["opts"]["all"]
        if not isinstance(opts, str):
            raise TypeError(f"unexpected env.java.opts.all in the shipped config: {opts!r}")
        return opts

    def _rest_answers(self) -> bool:
        self._fail_if_a_process_exited()
        self.request("GET", "/config")
        return True

    def _fail_if_a_process_exited(self) -> None:
        for process in (self.jobmanager, self.taskmanager):
            if process is not None and not process.is_running():
                raise AssertionError(
                    f"{process} exited with {process.returncode}:\n{process.log_tail(2000)}"
                )

    def wait_for_free_slots(self, count: int = 1, timeout: float = START_TIMEOUT_S) -> int:
        """Wait until `/overview` shows at least `count` free slots; return how many."""
        try:
            return wait_for(
                lambda: self._free_slots_if_at_least(count),
                timeout,
                f"{count} free slot(s) on Flink {self.version} at {self.rest_url}",
            )
        except AssertionError as timeout_error:
            raise AssertionError(f"{timeout_error}\n{self.describe_processes()}") from None

    def _free_slots_if_at_least(self, count: int) -> int:
        self._fail_if_a_process_exited()
        free = int(self.get_json("/overview")["slots-available"])
        return free if free >= count else 0

    def describe_processes(self) -> str:
        """Pids, exit codes and the end of each process's console output, for failure messages."""
        lines = []
        for process in (self.jobmanager, self.taskmanager):
            if process is None:
                continue
            lines.append(f"--- {process} returncode={process.returncode} ({process.log_path})")
            lines.append(process.log_tail(2000))
        return "\n".join(lines)

    # ---- REST ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = _REQUEST_TIMEOUT_S,
    ) -> RestResponse:
        """One HTTP request; any status is returned, only connection errors raise (OSError)."""
        request = urllib.request.Request(
            self.rest_url + path, data=body, method=method, headers=dict(headers or {})
        )
        try:
            with urlopen(request, timeout=timeout) as response:
                return RestResponse(response.status, response.read().decode())
        except urllib.error.HTTPError as error:
            with error:
                return RestResponse(error.code, error.read().decode(errors="replace"))

    def get_json(self, path: str) -> Any:
        response = self.request("GET", path)
        if response.status != 200:
            raise FlinkRestError("GET", path, response)
        return response.json()

    def _send_json(self, method: str, path: str, payload: object, expected: int) -> Any:
        response = self.request(
            method,
            path,
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        if response.status != expected:
            raise FlinkRestError(method, path, response)
        return response.json()

    def upload_jar(self, jar: Path) -> str:
        """POST /jars/upload; returns the jar id (the basename of the stored file)."""
        boundary = f"flinkprobe-{uuid.uuid4().hex}"
        body = b"".join(
            [
                f"--{boundary}\r\n".encode(),
                (
                    f'Content-Disposition: form-data; name="jarfile"; filename="{jar.name}"\r\n'
                    "Content-Type: application/x-java-archive\r\n\r\n"
                ).encode(),
                jar.read_bytes(),
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        response = self.request(
            "POST",
            "/jars/upload",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=60,
        )
        if response.status != 200:
            raise FlinkRestError("POST", "/jars/upload", response)
        return str(Path(response.json()["filename"]).name)

    def run_jar(self, jar_id: str, args: Sequence[str]) -> str:
        """POST /jars/:jarid/run with the program arguments; returns the job id."""
        answer = self._send_json(
            "POST", f"/jars/{jar_id}/run", {"programArgsList": list(args)}, expected=200
        )
        return str(answer["jobid"])

    def cancel(self, jid: str) -> None:
        """PATCH /jobs/:jid?mode=cancel (202); the job is CANCELED shortly after."""
        response = self.request("PATCH", f"/jobs/{jid}?mode=cancel")
        if response.status != 202:
            raise FlinkRestError("PATCH", f"/jobs/{jid}?mode=cancel", response)

    def job_details(self, jid: str) -> dict[str, Any] | None:
        """GET /jobs/:jid (cached up to web.refresh-interval); None if the job is unknown (404)."""
        response = self.request("GET", f"/jobs/{jid}")
        if response.status == 404:
            return None
        if response.status != 200:
            raise FlinkRestError("GET", f"/jobs/{jid}", response)
        details: dict[str, Any] = response.json()
        return details

    def job_state(self, jid: str) -> str | None:
        """The live JobStatus from /jobs/:jid/status; None if the cluster does not know the job
        (that endpoint answers 500 for an unknown job, so /jobs/:jid decides)."""
        response = self.request("GET", f"/jobs/{jid}/status")
        if response.status == 200:
            return str(response.json()["status"])
        details = self.job_details(jid)
        if details is None:
            return None
        raise FlinkRestError("GET", f"/jobs/{jid}/status", response)

    def num_restarts(self, jid: str) -> int | None:
        """numRestarts from /jobs/:jid/metrics; None while the metric fetcher has none (`[]`)."""
        metrics = self.get_json(f"/jobs/{jid}/metrics?get=numRestarts")
        for metric in metrics:
            if metric.get("id") == "numRestarts":
                return int(metric["value"])
        return None

    def wait_for_num_restarts(self, jid: str, minimum: int = 0, timeout: float = 60.0) -> int:
        """Wait until numRestarts is reported and at least `minimum`; return it."""

        def reported() -> tuple[int] | None:
            restarts = self.num_restarts(jid)
            # Boxed: a count of 0 is an answer, not "not yet".
            return (restarts,) if restarts is not None and restarts >= minimum else None

        return wait_for(reported, timeout, f"numRestarts >= {minimum} of job {jid}")[0]

    def start_time(self, jid: str) -> int | None:
        """`start-time` (epoch ms) from /jobs/:jid; None if the job is unknown."""
        details = self.job_details(jid)
        return None if details is None else int(details["start-time"])

    def wait_for_start_time_after(self, jid: str, previous: int, timeout: float = 90.0) -> int:
        """Wait until the job's start-time is later than `previous` (a new JobManager took it
        over, e.g. after an HA failover); return the new start-time."""

        def later_start_time() -> int | None:
            start = self.start_time(jid)
            return start if start is not None and start > previous else None

        return wait_for(later_start_time, timeout, f"job {jid} with a start-time after {previous}")

    def exceptions(self, jid: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.get_json(f"/jobs/{jid}/exceptions")
        return answer

    def jobs_overview(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self.get_json("/jobs/overview")["jobs"]
        return jobs

    def jobmanager_config(self) -> dict[str, str]:
        """The configuration the running JobManager actually uses (GET /jobmanager/config)."""
        return {entry["key"]: entry["value"] for entry in self.get_json("/jobmanager/config")}

    def wait_for_state(
        self, jid: str, states: str | AbstractSet[str], timeout: float = 60.0
    ) -> str:
        """Wait until the job's live status is one of `states`; return it."""
        wanted = {states} if isinstance(states, str) else states
        return wait_for(
            lambda: state if (state := self.job_state(jid)) in wanted else None,
            timeout,
            f"job {jid} in {sorted(wanted)} on Flink {self.version}",
        )

    def wait_for_tasks_running(self, jid: str, timeout: float = 60.0) -> None:
        """Wait until the job and all its tasks run (job RUNNING can precede task RUNNING)."""

        def all_tasks_running() -> bool:
            details = self.job_details(jid)
            return (
                details is not None
                and details["state"] == "RUNNING"
                and bool(details["vertices"])
                and all(vertex["status"] == "RUNNING" for vertex in details["vertices"])
            )

        wait_for(all_tasks_running, timeout, f"all tasks of job {jid} RUNNING")

    def restore(self, timeout: float = START_TIMEOUT_S) -> None:
        """Bring a shared cluster back to a clean state after a test: restart a dead JobManager
        or TaskManager, cancel every job that is not finished, wait until all slots are free."""
        if self.jobmanager is None or not self.jobmanager.is_running():
            self.start_jobmanager(timeout=timeout)
        if self.taskmanager is None or not self.taskmanager.is_running():
            self.start_taskmanager()
        wait_for(self._cancel_unfinished_jobs, timeout, "every job to end")
        self.wait_for_free_slots(self.slots, timeout)

    def _cancel_unfinished_jobs(self) -> bool:
        unfinished = [job for job in self.jobs_overview() if job["state"] not in TERMINAL_STATES]
        for job in unfinished:
            if job["state"] != "CANCELLING":
                self.cancel(job["jid"])
        return not unfinished

    wait_for = staticmethod(wait_for)
