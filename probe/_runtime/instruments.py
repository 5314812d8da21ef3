"""The daemon's own instruments: probes, requests, durations, scheduling lag, and the targets
of every source."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from probe._targets import SOURCES
from probe._targets.enrollment import STATUS
from probe._version import __version__

# No `*_created` series beside each counter and histogram, as most exporters: nothing reads
# them, and the README lists every series the daemon exports. (prometheus_client leaves the
# function unannotated.)
disable_created_metrics()  # type: ignore[no-untyped-call]


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
        self.targets = Gauge(
            "flink_probe_targets",
            "Targets this daemon wants to probe, by the source that declares them.",
            ["source"],
            registry=registry,
        )
        self.enrollments_refused = Counter(
            "flink_probe_enrollments_refused",
            "Scrapes of /probe that enrolled nothing, by reason.",
            ["reason"],
            registry=registry,
        )
        self.target_source_errors = Counter(
            "flink_probe_target_source_errors",
            "Targets files or http_sd answers refused (once per episode), and targets left out"
            " for a conflict (once each), by source.",
            ["source"],
            registry=registry,
        )
        # Every series from the start: a rate or an alert needs the zero before the first one.
        for source in SOURCES:
            self.targets.labels(source).set(0)
            if source != "config":  # a configured target is never refused
                self.target_source_errors.labels(source)
        for reason in STATUS:
            self.enrollments_refused.labels(reason)
        build = Gauge(
            "flink_probe_build_info",
            "Build of this flink-probe (value is always 1).",
            ["version", "python_version"],
            registry=registry,
        )
        build.labels(__version__, platform.python_version()).set(1)
