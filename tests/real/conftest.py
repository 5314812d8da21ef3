"""Fixtures that run real Flink clusters, ZooKeeper and Prometheus on 127.0.0.1.

- `flink_version` (session, parametrised): "2.3.0" (id `flink-2.3.0`) and the newest 1.20.x
  (id `flink-1.20.x`). Any test using a Flink fixture runs once per version.
- `flink` / `flink_ha` (per test): a `FlinkWithTestJob` (cluster + uploaded test-job jar) shared
  by all tests of the session for that version; after each test the cluster is restored
  (dead processes restarted, unfinished jobs cancelled, all 8 slots free). `flink_ha` runs with
  ZooKeeper high availability, so a killed JobManager's jobs come back.
- `zookeeper` (session), `start_prometheus` (per test: a factory).

A missing prerequisite (java/javac, the Flink download, zookeeper, prometheus) skips the test
with the fix in the message, and fails it when CI=true, so CI cannot go green by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest

from . import prometheus as prometheus_module
from . import zookeeper as zookeeper_module
from .cluster import FlinkCluster
from .flinkdist import FLINK_1_20_VERSION, FLINK_2_VERSION, FlinkDownloadError, ensure_flink
from .prometheus import Prometheus
from .testjob import FlinkWithTestJob, build_test_job
from .zookeeper import ZooKeeper

FLINK_VERSION_PARAMS = [
    pytest.param(FLINK_2_VERSION, id="flink-2.3.0"),
    pytest.param(FLINK_1_20_VERSION, id="flink-1.20.x"),
]
JDK_HINT = "apt-get install -y openjdk-17-jdk-headless"


def missing_prerequisite(reason: str) -> NoReturn:
    """Skip locally; fail under CI, where every prerequisite must have been installed."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session", params=FLINK_VERSION_PARAMS)
def flink_version(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    return version


@pytest.fixture(scope="session")
def flink_home(flink_version: str) -> Path:
    for tool in ("java", "javac", "jar"):
        if shutil.which(tool) is None:
            missing_prerequisite(f"{tool} is not installed ({JDK_HINT})")
    try:
        return ensure_flink(flink_version)
    except FlinkDownloadError as error:
        missing_prerequisite(
            f"Flink {flink_version} is not available ({error}); it is fetched from PyPI on "
            "first use, or ahead of time with `python tests/real/flinkdist.py`"
        )


@pytest.fixture(scope="session")
def test_job_jar(flink_version: str, flink_home: Path) -> Path:
    return build_test_job(flink_home, flink_version)


def _start_with_test_job(cluster: FlinkCluster, jar: Path) -> Iterator[FlinkWithTestJob]:
    with cluster:
        yield FlinkWithTestJob(cluster, cluster.upload_jar(jar))


@pytest.fixture(scope="session")
def shared_flink(
    flink_version: str,
    flink_home: Path,
    test_job_jar: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FlinkWithTestJob]:
    cluster = FlinkCluster(
        flink_version, tmp_path_factory.mktemp(f"flink-{flink_version}"), flink_home=flink_home
    )
    yield from _start_with_test_job(cluster, test_job_jar)


@pytest.fixture
def flink(shared_flink: FlinkWithTestJob) -> Iterator[FlinkWithTestJob]:
    yield shared_flink
    shared_flink.cluster.restore()


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeper]:
    reason = zookeeper_module.missing_prerequisite()
    if reason is not None:
        missing_prerequisite(reason)
    with ZooKeeper(tmp_path_factory.mktemp("zookeeper")) as server:
        yield server


@pytest.fixture(scope="session")
def shared_flink_ha(
    flink_version: str,
    flink_home: Path,
    test_job_jar: Path,
    zookeeper: ZooKeeper,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FlinkWithTestJob]:
    cluster = FlinkCluster(
        flink_version,
        tmp_path_factory.mktemp(f"flink-ha-{flink_version}"),
        ha=zookeeper,
        flink_home=flink_home,
    )
    yield from _start_with_test_job(cluster, test_job_jar)


@pytest.fixture
def flink_ha(shared_flink_ha: FlinkWithTestJob) -> Iterator[FlinkWithTestJob]:
    yield shared_flink_ha
    shared_flink_ha.cluster.restore()


@pytest.fixture(scope="session")
def prometheus_installed() -> None:
    """The prometheus and promtool binaries are there (skip, or fail in CI, if not)."""
    reason = prometheus_module.missing_prerequisite()
    if reason is not None:
        missing_prerequisite(reason)


@pytest.fixture
def start_prometheus(
    prometheus_installed: None, tmp_path: Path
) -> Iterator[Callable[..., Prometheus]]:
    """A factory: `start_prometheus("127.0.0.1:9100", metrics_path="/metrics")` returns a running
    Prometheus that scrapes that target every second (or runs `scrape_config=`, a scrape job of
    its own); all are stopped after the test."""
    started: list[Prometheus] = []

    def start(
        target: str,
        *,
        metrics_path: str = "/metrics",
        wait_for_target: bool = True,
        scrape_config: Mapping[str, Any] | None = None,
    ) -> Prometheus:
        server = Prometheus(
            tmp_path / f"prometheus-{len(started)}",
            target,
            metrics_path=metrics_path,
            scrape_config=scrape_config,
        )
        started.append(server)
        return server.start(wait_for_target=wait_for_target)

    yield start
    for server in started:
        server.stop()
