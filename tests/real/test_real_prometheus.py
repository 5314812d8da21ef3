"""A real Prometheus scrapes the real daemon watching a real Flink: what it stores is what the
daemon's Job API says, and `promtool check metrics` finds nothing wrong with `/metrics`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import dashed, flink_status_of, restarts_of

from .daemon import TARGET, ProbeDaemon, record_result
from .prometheus import SCRAPE_JOB, Prometheus, promtool_check_metrics
from .testjob import FlinkWithTestJob
from .waiting import wait_for

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
