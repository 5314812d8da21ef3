"""Prometheus metrics: per-Job families built at scrape time from memory, and the daemon's own.

Nothing here does I/O at scrape time: the per-Job values are the probe loop's durable cache
(``JobBook.exposed``), because a lower bound on restarts needs every JobManager epoch seen, which
only continuous probing can give; a scrape-time fetch would miss the ones between scrapes.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._version import __version__
from .book import JobBook
from .fold import JobRecord
from .model import FlinkJobStatus, JobState

CACHE_NOTE = "Cached by the probe loop, not fetched at scrape time."
JOB_LABELS = ("namespace", "deployment", "job_id", "flink_job_id", "target")


@dataclass(slots=True)
class TargetHealth:
    """What the scheduler knows of one target, read by metrics, /readyz and logs."""

    up: bool = False
    probed: bool = False
    last_probe_at: float | None = None
    last_error: str | None = None
    jobs: int = 0


class DaemonMetrics:
    """The daemon's own instruments, on its own registry (never the global default)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.probes = Counter(
            "flink_probe_probes",
            "Probe rounds of a target by result (success: the overview answered well-formed).",
            ["target", "result"],
            registry=registry,
        )
        self.request_errors = Counter(
            "flink_probe_request_errors",
            "Requests to Flink that gave no usable answer, by endpoint and reason.",
            ["target", "endpoint", "reason"],
            registry=registry,
        )
        self.requests = Counter(
            "flink_probe_requests",
            "Requests sent to Flink REST APIs.",
            ["target"],
            registry=registry,
        )
        self.probe_duration = Histogram(
            "flink_probe_probe_duration_seconds",
            "Duration of a probe round of a target (all its requests).",
            ["target"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.scheduler_lag = Histogram(
            "flink_probe_scheduler_lag_seconds",
            "How late a probe round started against its schedule.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.rounds_skipped = Counter(
            "flink_probe_rounds_skipped",
            "Probe rounds not run because the previous round of the target overran.",
            ["target"],
            registry=registry,
        )
        build = Gauge(
            "flink_probe_build_info",
            "Build of this flink-probe (value is always 1).",
            ["version", "python_version"],
            registry=registry,
        )
        build.labels(__version__, platform.python_version()).set(1)


class StateCollector(Collector):
    """Per-Job, per-target and store families, built from memory at every scrape."""

    def __init__(
        self,
        book: JobBook,
        targets: Callable[[], Mapping[str, TargetHealth]],
        retention: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._book = book
        self._targets = targets
        self._retention = retention
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        now = self._clock()
        restarts = CounterMetricFamily(
            "flink_probe_job_restarts",
            "observedFlinkJobRestarts: a lower bound on the Flink job's restarts, JobManager "
            f"process restarts included. {CACHE_NOTE}",
            labels=JOB_LABELS,
        )
        status = GaugeMetricFamily(
            "flink_probe_job_status",
            "observedFlinkJobStatus of the last probe (1 for the current value; UNKNOWN when "
            f"the probe could not learn it). {CACHE_NOTE}",
            labels=(*JOB_LABELS, "status"),
        )
        state = GaugeMetricFamily(
            "flink_probe_job_state",
            f"The Job resource's status.state (1 for the current value). {CACHE_NOTE}",
            labels=(*JOB_LABELS, "state"),
        )
        last_probe = GaugeMetricFamily(
            "flink_probe_job_last_probe_timestamp_seconds",
            f"When the last probe of the Job ended (Unix time). {CACHE_NOTE}",
            labels=JOB_LABELS,
        )
        by_state = dict.fromkeys(JobState, 0)
        for record in list(self._book.exposed.values()):
            job = record.job
            by_state[job.state] += 1
            if not self._shown(record, now):
                continue
            labels = [
                job.metadata.namespace,
                job.metadata.deployment_name,
                job.id,
                job.flink_job_id,
                job.target,
            ]
            for value in JobState:
                state.add_metric([*labels, value.value], 1.0 if value is job.state else 0.0)
            if record.last_probe_at is not None:
                last_probe.add_metric(labels, record.last_probe_at)
            started = job.status.started
            if started is None:
                continue
            restarts.add_metric(labels, started.observed_flink_job_restarts)
            current = started.observed_flink_job_status
            for flink_status in FlinkJobStatus:
                status.add_metric(
                    [*labels, flink_status.value], 1.0 if flink_status is current else 0.0
                )
        yield from (restarts, status, state, last_probe)

        jobs = GaugeMetricFamily(
            "flink_probe_jobs", "Job resources known to the daemon, by state.", labels=["state"]
        )
        for value, count in by_state.items():
            jobs.add_metric([value.value], count)
        yield jobs

        up = GaugeMetricFamily(
            "flink_probe_target_up",
            "1 if the last overview request to the target's cluster got a well-formed answer.",
            labels=["target"],
        )
        for name, health in self._targets().items():
            up.add_metric([name], 1.0 if health.up else 0.0)
        yield up

        store = self._book.health
        yield GaugeMetricFamily(
            "flink_probe_store_up",
            "1 if the last write to the state store succeeded.",
            value=1.0 if store.ok else 0.0,
        )
        yield CounterMetricFamily(
            "flink_probe_store_commits",
            "Batches committed to the state store.",
            value=store.commits,
        )
        yield CounterMetricFamily(
            "flink_probe_store_failures",
            "Batches the state store refused (kept in memory and retried).",
            value=store.failures,
        )

    def _shown(self, record: JobRecord, now: float) -> bool:
        """Final Jobs stay in /metrics for the retention period after they ended."""
        ended = record.job.metadata.terminated_at
        return ended is None or now - ended.timestamp() <= self._retention
