"""A real Prometheus scrapes the real daemon watching a real Flink: what it stores is what the
daemon's Job API says, and `promtool check metrics` finds nothing wrong with `/metrics`; with
the shipped file_sd configuration it scrapes `/probe?target=` for a cluster listed in a file,
and stores Flink's restart count."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import REPO, dashed, flink_status_of, restarts_of

from .daemon import TARGET, ProbeDaemon, record_result
from .loopback import LOOPBACK
from .prometheus import SCRAPE_JOB, Prometheus, promtool_check_metrics
from .testjob import FlinkWithTestJob
from .waiting import wait_for

FILE_SD_EXAMPLE = REPO / "config" / "prometheus" / "file-sd.yml"

pytestmark = [pytest.mark.realflink, pytest.mark.prometheus, pytest.mark.slow]


def only_value(result: list[dict[str, Any]]) -> float | None:
    """The value of a query that selects at most one series (None: none)."""
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def test_prometheus_stores_what_the_job_api_says(
    flink: FlinkWithTestJob,
    start_prometheus: Callable[..., Prometheus],
    tmp_path: Path,
    flink_version: str,
) -> None:
    cluster = flink.cluster
    with ProbeDaemon(tmp_path / "probe", cluster.rest_url) as daemon:
        jid = flink.submit("restart", 1500)
        job_id = dashed(jid)
        daemon.wait_job(job_id, lambda j: (restarts_of(j) or 0) >= 1, "a restart counted")
        prometheus = start_prometheus(f"127.0.0.1:{daemon.port}")
        selector = f'job_id="{job_id}"'

        def scraped() -> tuple[float | None, float | None]:
            """(restarts, RUNNING) of the Job as Prometheus stored them."""
            restarts = only_value(prometheus.query(f"flink_probe_job_restarts_total{{{selector}}}"))
            running = only_value(
                prometheus.query(f'flink_probe_job_status{{{selector},status="RUNNING"}}')
            )
            return restarts, running

        def api() -> tuple[int | None, float]:
            job = daemon.job(job_id)
            return restarts_of(job), 1.0 if flink_status_of(job) == "RUNNING" else 0.0

        def scraped_matches_api_around_it() -> tuple[int | None, float] | None:
            # Prometheus holds a scrape at most about a second old: it is compared with the
            # API when the API says the same before and after the query.
            before = api()
            stored = scraped()
            after = api()
            assert stored[0] is None or after[0] is None or stored[0] <= after[0], (stored, after)
            return after if before == after == stored else None

        while_running = wait_for(
            scraped_matches_api_around_it, 60, "Prometheus to hold the API's values", interval=0.3
        )
        assert promtool_check_metrics(daemon.metrics_text()) == ""

        series = prometheus.query(f"flink_probe_job_restarts_total{{{selector}}}")[0]["metric"]
        assert series["job"] == SCRAPE_JOB
        assert series["target"] == TARGET
        assert series["flink_job_id"] == jid
        assert series["namespace"] == "default"
        assert series["deployment"] == "flinkprobe-restart"
        assert only_value(prometheus.query(f'flink_probe_target_up{{target="{TARGET}"}}')) == 1

        cluster.cancel(jid)
        final = restarts_of(daemon.wait_settled(job_id))
        assert final == cluster.wait_for_num_restarts(jid)

        def cancelled_and_final() -> bool:
            canceled = prometheus.query(f'flink_probe_job_status{{{selector},status="CANCELED"}}')
            terminated = prometheus.query(f'flink_probe_job_state{{{selector},state="TERMINATED"}}')
            return (
                scraped() == (final, 0.0)
                and only_value(canceled) == 1
                and only_value(terminated) == 1
            )

        wait_for(cancelled_and_final, 30, f"Prometheus to hold the final count {final}")
        assert promtool_check_metrics(daemon.metrics_text()) == ""
        daemon.terminate()
    record_result(
        f"flink-{flink_version} prometheus: while running API=Prometheus={while_running[0]}, "
        f"final API=Prometheus={final}"
    )


def file_sd_scrape_job(targets_file: Path, probe_address: str) -> dict[str, Any]:
    """The scrape job of config/prometheus/file-sd.yml as shipped, but for `targets_file`, the
    daemon at `probe_address`, and every second."""
    [job] = yaml.safe_load(FILE_SD_EXAMPLE.read_text())["scrape_configs"]
    job = copy.deepcopy(job)
    job["file_sd_configs"] = [{"files": [str(targets_file)], "refresh_interval": "1s"}]
    job["scrape_interval"] = job["scrape_timeout"] = "1s"
    [to_the_daemon] = [r for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
    to_the_daemon["replacement"] = probe_address
    return dict(job)


def test_prometheus_file_sd_through_probe_stores_flinks_restart_count(
    flink: FlinkWithTestJob,
    start_prometheus: Callable[..., Prometheus],
    tmp_path: Path,
    flink_version: str,
) -> None:
    cluster = flink.cluster
    address = f"{LOOPBACK}:{cluster.rest_port}"  # as a file_sd file lists it: host:port
    enrollment = {"allow": [rf"http://{re.escape(address)}/"], "first_wait": "500ms"}
    with ProbeDaemon(tmp_path / "probe", None, settings={"enrollment": enrollment}) as daemon:
        jid = flink.submit("restart", 1500)
        job_id = dashed(jid)
        targets = tmp_path / "targets.yml"
        targets.write_text(
            yaml.safe_dump([{"targets": [address], "labels": {"deployment": "restarter"}}])
        )
        probe_address = f"{LOOPBACK}:{daemon.port}"
        prometheus = start_prometheus(
            probe_address, scrape_config=file_sd_scrape_job(targets, probe_address)
        )
        selector = f'flink_job_id="{jid}"'

        def stored() -> float | None:
            return only_value(prometheus.query(f"flink_probe_job_restarts_total{{{selector}}}"))

        # An enrolled target's numRestarts may be probe.interval + 10 s old: counts are
        # confirmed that long after the epoch is first seen.
        wait_for(lambda: (stored() or 0) >= 1, 120, "Prometheus to store a counted restart")
        series = prometheus.query(f"flink_probe_job_restarts_total{{{selector}}}")[0]["metric"]
        assert series["job"] == "flink-jobs"
        assert series["instance"] == address
        assert series["target"] == address  # the name of a URL without one: host:port
        assert series["job_id"] == job_id
        assert series["namespace"] == "default"
        assert series["deployment"] == "restarter"
        running = stored()
        assert running is not None
        assert running <= cluster.wait_for_num_restarts(jid)
        metrics = daemon.metrics()
        assert metrics.value("flink_probe_targets", source="enrolled") == 1
        assert metrics.value("flink_probe_targets", source="config") == 0

        cluster.cancel(jid)
        final = restarts_of(daemon.wait_settled(job_id, timeout=120))
        assert final == cluster.wait_for_num_restarts(jid)
        wait_for(lambda: stored() == final, 30, f"Prometheus to store Flink's final count {final}")
        daemon.terminate()
    record_result(
        f"flink-{flink_version} prometheus file_sd -> /probe: while running Prometheus={running:g} "
        f"<= Flink, final daemon=Prometheus=Flink={final}"
    )
