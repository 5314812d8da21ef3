"""The fake Flink tier: static JSON files for T targets and N RUNNING jobs, served by nginx.

Every target is one nginx ``server`` on a port of its own (or, for thousands of targets, a few
ports each serve many targets, told apart by a path prefix ``/t<i>/``); its root holds
``overview.json``
(the ``/jobs/overview`` answer, in the shape of a real Flink 2.3.0 answer), ``details/<jid>.json``
(``/jobs/<jid>``) and ``metrics/<jid>.json`` (``/jobs/<jid>/metrics?get=numRestarts``, nginx
ignores the query). Jobs are RUNNING with a fixed ``start-time``, so every Job the daemon makes
of them is STARTED and stays so: a steady state.

nginx runs with its own prefix, configuration, pid file and logs in the bench's temporary
directory (never the system service), in the foreground (``daemon off``) so it is stopped by
the pid the script started. Without an nginx binary, ``bench.leanserver`` serves the same
files (and the report says so).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from .machine import children, placement

ServerKind = Literal["nginx", "python"]

# Fields copied from a real Flink 2.3.0 `/jobs/overview` entry
# (tests/fixtures/flink-2.3.0-rest/26_jobs_overview_one_running.json).
START_TIME_MS: Final = 1795876276607
RESTARTS: Final = 3
"""What every job's numRestarts answers: a steady count, credited once, then unchanged."""


def _overview_entry(jid: str, name: str) -> dict[str, Any]:
    return {
        "jid": jid,
        "name": name,
        "jobType": "STREAMING",
        "schedulerType": "Default",
        "start-time": START_TIME_MS,
        "end-time": -1,
        "duration": 3514,
        "state": "RUNNING",
        "last-modification": START_TIME_MS + 866,
        "tasks": {
            "running": 1,
            "canceling": 0,
            "canceled": 0,
            "total": 1,
            "created": 0,
            "scheduled": 0,
            "deploying": 0,
            "reconciling": 0,
            "finished": 0,
            "initializing": 0,
            "failed": 0,
        },
        "pending-operators": 0,
    }


def _details(jid: str, name: str) -> dict[str, Any]:
    # The fields of `/jobs/<jid>` the daemon reads, plus a few of the real answer's.
    return {
        "jid": jid,
        "name": name,
        "isStoppable": False,
        "state": "RUNNING",
        "job-type": "STREAMING",
        "start-time": START_TIME_MS,
        "end-time": -1,
        "duration": 3478,
        "maxParallelism": -1,
        "now": START_TIME_MS + 3478,
    }


@dataclass(frozen=True, slots=True)
class FakeTarget:
    name: str
    port: int
    jids: tuple[str, ...]
    path: str = "/"
    """The REST API's prefix: ``/`` on a port of its own, ``/<name>/`` on a shared one."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def job_name(target: int, job: int) -> str:
    return f"bench-t{target:03d}-j{job:05d}"


def jid_of(target: int, job: int) -> str:
    """A stable, random-looking 32-hex Flink job id."""
    return hashlib.md5(f"bench/{target}/{job}".encode()).hexdigest()


def plan(targets: int, jobs: int) -> list[list[tuple[str, str]]]:
    """(jid, name) of the jobs of every target: job j runs on target j mod T."""
    per_target: list[list[tuple[str, str]]] = [[] for _ in range(targets)]
    for job in range(jobs):
        target = job % targets
        per_target[target].append((jid_of(target, job), job_name(target, job)))
    return per_target


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now (all held at once, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def target_name(index: int) -> str:
    return f"t{index:03d}"


def write_tree(root: Path, targets: int, jobs: int) -> list[list[tuple[str, str]]]:
    """The files of every target under ``root/t<i>``; readable by nginx's unprivileged worker."""
    layout = plan(targets, jobs)
    unknown = json.dumps([]).encode()
    for index, entries in enumerate(layout):
        directory = root / target_name(index)
        (directory / "details").mkdir(parents=True)
        (directory / "metrics").mkdir()
        overview = {"jobs": [_overview_entry(jid, name) for jid, name in entries]}
        (directory / "overview.json").write_bytes(json.dumps(overview).encode())
        (directory / "metrics-unknown.json").write_bytes(unknown)
        restarts = json.dumps([{"id": "numRestarts", "value": str(RESTARTS)}]).encode()
        for jid, name in entries:
            (directory / "details" / f"{jid}.json").write_bytes(
                json.dumps(_details(jid, name)).encode()
            )
            (directory / "metrics" / f"{jid}.json").write_bytes(restarts)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return layout


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _temp_path_directives(binary: str, workdir: Path) -> list[str]:
    """Every compiled-in ``*_temp_path``, moved into ``workdir`` (the defaults under /var/lib
    may not be writable, and are the system service's)."""
    built = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False).stderr
    directives = []
    for module in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        option = "client-body" if module == "client_body" else module
        if f"--http-{option}-temp-path" in built or module == "client_body":
            directives.append(f"{module}_temp_path {workdir / ('temp-' + module)};")
    return directives


def _nginx_server(port: int, root: Path, prefixed: bool) -> str:
    """One ``server``: the files of ``root`` (of ``root/<target>`` by path prefix if
    ``prefixed``)."""
    target, first, job = ("/(t[0-9]+)", "/$1", "$2") if prefixed else ("", "", "$1")
    return f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location ~ "^{target}/jobs/overview$" {{ try_files {first}/overview.json =404; }}
        location ~ "^{target}/jobs/([0-9a-f]{{32}})$" {{
            try_files {first}/details/{job}.json =404;
        }}
        location ~ "^{target}/jobs/([0-9a-f]{{32}})/metrics$" {{
            try_files {first}/metrics/{job}.json {first}/metrics-unknown.json;
        }}
        location / {{ return 404 '{{"errors":["Not found"]}}'; }}
    }}"""


def nginx_config(
    binary: str, workdir: Path, www: Path, targets: Sequence[FakeTarget], cpu: int | None
) -> str:
    if any(target.path != "/" for target in targets):
        ports = sorted({target.port for target in targets})
        servers = [_nginx_server(port, www, prefixed=True) for port in ports]
    else:
        servers = [
            _nginx_server(target.port, www / target.name, prefixed=False) for target in targets
        ]
    affinity = f"worker_cpu_affinity {1 << cpu:b};" if cpu is not None else ""
    # Cached files hold descriptors: half of them, so that accept() never runs out (tens of
    # thousands of jobs' files would take every descriptor and hang new connections).
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = files if files != resource.RLIM_INFINITY else 1 << 20
    user = "user root;" if os.geteuid() == 0 else ""
    temp_paths = "\n    ".join(_temp_path_directives(binary, workdir))
    return f"""# flink-probe benchmark: fake Flink tier (generated; started and stopped by bench)
daemon off;
master_process on;
worker_processes 1;
{affinity}
{user}
worker_rlimit_nofile {files};
pid {workdir / "nginx.pid"};
error_log {workdir / "nginx-error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/json;
    types {{ application/json json; }}
    sendfile on;
    tcp_nodelay on;
    open_file_cache max={max(1024, files // 2)} inactive=600s;
    keepalive_timeout 600s;
    keepalive_requests 100000000;
    {temp_paths}
    {"".join(servers)}
}}
"""


class FakeFlinkTier:
    """Writes the files, starts the server pinned to ``cpu``, stops it by its pid.

    ``ports``: how many ports serve the targets (None: one each); fewer than the targets, they
    share them, each under the path prefix ``/<name>/``.
    """

    def __init__(
        self,
        workdir: Path,
        targets: int,
        jobs: int,
        server: ServerKind,
        cpu: int | None,
        nice: int = 0,
        ports: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.nice = nice
        self.server: ServerKind = server
        self.cpu = cpu
        self.www = workdir / "www"
        layout = write_tree(self.www, targets, jobs)
        shared = ports is not None and ports < targets
        numbers = free_ports(ports if ports is not None and shared else targets)
        self.targets = []
        for index, entries in enumerate(layout):
            name = target_name(index)
            self.targets.append(
                FakeTarget(
                    name=name,
                    port=numbers[index % len(numbers)],
                    jids=tuple(jid for jid, _ in entries),
                    path=f"/{name}/" if shared else "/",
                )
            )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, deadline: float = 20.0) -> None:
        if self.server == "nginx":
            binary = nginx_binary()
            if binary is None:
                raise RuntimeError("nginx is not installed")
            config = self.workdir / "nginx.conf"
            config.write_text(nginx_config(binary, self.workdir, self.www, self.targets, self.cpu))
            command = [
                binary,
                "-p",
                str(self.workdir),
                "-e",
                str(self.workdir / "nginx-error.log"),
                "-c",
                str(config),
            ]
        else:
            prefixed = any(target.path != "/" for target in self.targets)
            ports = [t.port for t in self.targets]
            command = [
                sys.executable,
                "-m",
                "bench.leanserver",
                "--root",
                str(self.www),
                "--ports",
                ",".join(map(str, sorted(set(ports)) if prefixed else ports)),
                *(["--prefixed"] if prefixed else []),
            ]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / f"{self.server}-stderr.log", "wb"),  # noqa: SIM115
            preexec_fn=placement(self.cpu, self.nice),
            cwd=Path(__file__).resolve().parent.parent,
        )
        self._wait_until_serving(time.monotonic() + deadline)

    def _wait_until_serving(self, deadline: float) -> None:
        assert self.process is not None
        # One target per port: a port serves all of its targets at once.
        pending = list({target.port: target for target in self.targets}.values())
        while pending:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.server} exited at start-up: {self._error_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.server} did not serve in time: {self._error_text()}")
            target = pending[0]
            try:
                with socket.create_connection(("127.0.0.1", target.port), timeout=1) as sock:
                    sock.sendall(f"GET {target.path}jobs/overview HTTP/1.0\r\n\r\n".encode())
                    if sock.recv(12).startswith(b"HTTP/1.1 200"):
                        pending.pop(0)
                        continue
            except OSError:
                pass
            time.sleep(0.02)

    def _error_text(self) -> str:
        texts = []
        for name in ("nginx-error.log", f"{self.server}-stderr.log"):
            path = self.workdir / name
            if path.exists():
                texts.append(path.read_text(errors="replace").strip()[-2000:])
        return " | ".join(t for t in texts if t) or "(no output)"

    def errors(self) -> int:
        """Lines of nginx's error log at level error or worse: the tier failing, not the daemon."""
        path = self.workdir / "nginx-error.log"
        if not path.exists():
            return 0
        with path.open(errors="replace") as log:
            return sum(1 for line in log if re.search(r"\[(error|crit|alert|emerg)\]", line))

    @property
    def pids(self) -> list[int]:
        """The server's processes (nginx: master and worker)."""
        if self.process is None:
            return []
        return [self.process.pid, *children(self.process.pid)]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # nginx: SIGQUIT is a graceful stop; SIGTERM a fast one (what a benchmark needs).
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
