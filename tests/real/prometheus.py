"""A real Prometheus server (Debian's `prometheus` package) that scrapes one target every second
(or runs a scrape job it is given, such as one with `file_sd_configs`).

Own config and TSDB folder in a work folder, listening on 127.0.0.1 at a free port, started and
stopped by pid. Also `promtool_check_metrics`, Prometheus's own linter for exposition text.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Self

import yaml

from .loopback import LOOPBACK, free_port, urlopen
from .processes import ManagedProcess, Service
from .waiting import wait_for

INSTALL_HINT: Final = "apt-get install -y prometheus"
START_TIMEOUT_S: Final = 60.0
TARGET_UP_TIMEOUT_S: Final = 30.0
SCRAPE_JOB: Final = "flink-probe"


def missing_prerequisite() -> str | None:
    """Why this cannot run here (with the fix), or None when it can."""
    for binary in ("prometheus", "promtool"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed ({INSTALL_HINT})"
    return None


def promtool_check_metrics(exposition: str) -> str:
    """Run `promtool check metrics` on exposition text; return what it says (empty when clean).

    promtool exits 1 when it finds a problem and prints the problems; both streams are returned
    so a test can assert the output is empty or show it.
    """
    completed = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed.stdout + completed.stderr


class Prometheus(Service):
    """Scrapes `target` ("host:port") at `metrics_path` every second, as job `flink-probe`; or,
    with `scrape_config`, runs that scrape job instead (every second too, unless it says)."""

    def __init__(
        self,
        workdir: Path,
        target: str,
        *,
        metrics_path: str = "/metrics",
        port: int | None = None,
        scrape_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.target = target
        self.metrics_path = metrics_path
        self.port = port if port is not None else free_port()
        self.scrape_config = scrape_config or {
            "job_name": SCRAPE_JOB,
            "metrics_path": metrics_path,
            "static_configs": [{"targets": [target]}],
        }
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, *, wait_for_target: bool = True, timeout: float = START_TIMEOUT_S) -> Self:
        """Start the server and wait until it is ready (and, by default, the target is up)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": "1s",
                        "scrape_timeout": "1s",
                        "evaluation_interval": "1s",
                    },
                    "scrape_configs": [dict(self.scrape_config)],
                },
                sort_keys=False,
            )
        )
        self.process = ManagedProcess(
            "prometheus",
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                "--log.level=warn",
            ],
            log_path=self.workdir / "prometheus.out",
            cwd=self.workdir,
        )
        wait_for(self._is_ready, timeout, f"Prometheus at {self.url} to be ready")
        if wait_for_target:
            self.wait_for_target_up()
        return self

    def _is_ready(self) -> bool:
        if self.process is not None and not self.process.is_running():
            raise AssertionError(
                f"Prometheus exited with {self.process.returncode}:\n{self.process.log_tail()}"
            )
        with urlopen(f"{self.url}/-/ready", timeout=5) as response:
            return bool(response.status == 200)

    def targets(self) -> list[dict[str, Any]]:
        """The active targets from /api/v1/targets (health, lastError, scrapeUrl, ...)."""
        active: list[dict[str, Any]] = self._api("/api/v1/targets")["activeTargets"]
        return active

    def wait_for_target_up(self, timeout: float = TARGET_UP_TIMEOUT_S) -> None:
        wait_for(
            lambda: any(target["health"] == "up" for target in self.targets()),
            timeout,
            f"Prometheus to scrape {self.target}{self.metrics_path} successfully "
            f"(targets: see {self.url}/api/v1/targets)",
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns `data.result`: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        result: list[dict[str, Any]] = self._api(
            "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        )["result"]
        return result

    def _api(self, path: str) -> Any:
        with urlopen(self.url + path, timeout=10) as response:
            answer = json.load(response)
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} answered {answer}")
        return answer["data"]

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
