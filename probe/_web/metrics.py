"""Prometheus metrics: per-Job families built at scrape time from memory, and the daemon's own.

Nothing here does I/O at scrape time: the per-Job values are the probe loop's durable cache
(``JobBook.exposed``), because a lower bound on restarts needs every JobManager epoch seen, which
only continuous probing can give; a scrape-time fetch would miss the ones between scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from probe._core.model import FlinkJobStatus, JobState
from probe._core.record import JobRecord
from probe._runtime.book import JobBook
from probe._runtime.ownership import Ownership
from probe._runtime.scheduler import TargetHealth

CACHE_NOTE = "Cached by the probe loop, not fetched at scrape time."


class StateCollector(Collector):
    """Per-target, per-state and store families, built from memory at every scrape.

    The per-Job families are far larger (about 20 series a Job) and are rendered by
    ``JobSeriesRenderer`` instead, from each Job's label set kept as text.
    """

    def __init__(
        self,
        book: JobBook,
        targets: Callable[[], Mapping[str, TargetHealth]],
        ownership: Ownership | None = None,
        wanted: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        """``ownership``: the leases, for the lease families (None: the store up alone from
        its writes); ``wanted``: the configured targets, each with a lease series."""
        self._book = book
        self._targets = targets
        self._ownership = ownership
        self._wanted = wanted

    def collect(self) -> Iterable[Metric]:
        by_state = dict.fromkeys(JobState, 0)
        for record in list(self._book.exposed.values()):
            by_state[record.job.state] += 1
        jobs = GaugeMetricFamily(
            "flink_probe_jobs", "Job resources known to the daemon, by state.", labels=["state"]
        )
        for value, count in by_state.items():
            jobs.add_metric([value.value], count)
        yield jobs

        yield target_up(self._targets())

        store = self._book.health
        ownership = self._ownership
        reachable = ownership is None or ownership.reachable
        yield GaugeMetricFamily(
            "flink_probe_store_up",
            "1 if the last write to the state store and the last lease claim succeeded.",
            value=1.0 if store.ok and reachable else 0.0,
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
        events = CounterMetricFamily(
            "flink_probe_events",
            "Events this daemon wrote to the store, by namespace and reason.",
            labels=["namespace", "reason"],
        )
        for (namespace, reason), count in sorted(store.events_written.items()):
            events.add_metric([namespace, reason], count)
        yield events
        yield CounterMetricFamily(
            "flink_probe_events_dropped",
            "Events deleted past events.retention or events.max_per_job, oldest first.",
            value=store.events_dropped,
        )
        if ownership is not None:
            yield from _lease_families(ownership, self._wanted())


def target_up(targets: Mapping[str, TargetHealth | None]) -> GaugeMetricFamily:
    """``flink_probe_target_up`` of `targets` (None: not probed by this daemon, 0)."""
    up = GaugeMetricFamily(
        "flink_probe_target_up",
        "1 if the last overview request to the target's cluster got a well-formed answer.",
        labels=["target"],
    )
    for name, health in targets.items():
        up.add_metric([name], 1.0 if health is not None and health.up else 0.0)
    return up


def _lease_families(ownership: Ownership, wanted: Iterable[str]) -> Iterator[Metric]:
    held = ownership.held
    lease = GaugeMetricFamily(
        "flink_probe_target_lease",
        "1 if this daemon holds the target's lease: it probes the target and exports its Jobs.",
        labels=["target"],
    )
    for name in sorted(set(wanted) | held):
        lease.add_metric([name], 1.0 if name in held else 0.0)
    yield lease
    yield CounterMetricFamily(
        "flink_probe_lease_takeovers",
        "Leases this daemon took over from another instance (expired, or released).",
        value=ownership.takeovers,
    )


@dataclass(frozen=True, slots=True)
class _Family:
    name: str
    type: str
    help: str

    def header(self, openmetrics: bool) -> str:
        # The text format names a counter by its sample (`_total`), OpenMetrics by its family.
        name = self.name + "_total" if self.type == "counter" and not openmetrics else self.name
        return f"# HELP {name} {self.help}\n# TYPE {name} {self.type}\n"


RESTARTS = _Family(
    "flink_probe_job_restarts",
    "counter",
    "observedFlinkJobRestarts: a lower bound on the Flink job's restarts, JobManager process "
    f"restarts included. {CACHE_NOTE}",
)
STATUS = _Family(
    "flink_probe_job_status",
    "gauge",
    "observedFlinkJobStatus of the last probe (1 for the current value; UNKNOWN when the probe "
    f"could not learn it). {CACHE_NOTE}",
)
STATE = _Family(
    "flink_probe_job_state",
    "gauge",
    f"The Job resource's status.state (1 for the current value). {CACHE_NOTE}",
)
LAST_PROBE = _Family(
    "flink_probe_job_last_probe_timestamp_seconds",
    "gauge",
    f"When the last probe of the Job ended (Unix time). {CACHE_NOTE}",
)
JOB_FAMILIES: Final = (RESTARTS, STATUS, STATE, LAST_PROBE)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class JobSeriesRenderer:
    """The per-Job families as exposition text, from the committed records.

    A scrape holds about 20 series a Job, too many for prometheus_client's generic path. A
    Job's label set never changes, so it is kept as text; its 18 state and status lines are one
    join of that text with pieces made once per value (``_enum_pieces``), and its count and
    last-probe lines one f-string each.
    """

    def __init__(
        self, book: JobBook, retention: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._book = book
        self._retention = retention
        self._clock = clock
        self._labels: dict[str, str] = {}
        """Job id -> its label set (``JobSeriesRenderer._label_set``)."""

    def chunks(
        self,
        openmetrics: bool = False,
        jobs_per_chunk: int = 256,
        records: Iterable[JobRecord] | None = None,
    ) -> Iterator[str]:
        """The text in pieces of a few hundred Jobs, family after family: a server can send
        each before the next is made, so a large scrape never holds the whole body and the
        event loop gets a turn between pieces.

        `records`: the Jobs to show (``GET /probe``: one target's); default every exposed Job.
        """
        now = self._clock()
        every = records is None
        if records is None:
            records = list(self._book.exposed.values())
        shown = [r for r in records if self._shown(r, now)]
        if every:  # only a whole scrape tells which Jobs are gone
            for gone in self._labels.keys() - {record.job.id for record in shown}:
                del self._labels[gone]
        labels: list[str] = []  # made piece by piece too, with the first family's pieces
        for family, lines in (
            (RESTARTS, _restarts_line),
            (STATUS, _status_lines),
            (STATE, _state_lines),
            (LAST_PROBE, _last_probe_line),
        ):
            yield family.header(openmetrics)
            for start in range(0, len(shown), jobs_per_chunk):
                end = start + jobs_per_chunk
                labels.extend(map(self._label_set, shown[len(labels) : end]))
                yield "".join(map(lines, shown[start:end], labels[start:end]))

    def _label_set(self, record: JobRecord) -> str:
        """The Job's labels but the enum one, as text (they never change for a Job)."""
        job = record.job
        labels = self._labels.get(job.id)
        if labels is None:
            meta = job.metadata
            labels = self._labels[job.id] = (
                f'deployment="{_label_value(meta.deployment_name)}",'
                f'flink_job_id="{job.flink_job_id}",job_id="{job.id}",'
                f'namespace="{_label_value(meta.namespace)}",'
                f'target="{_label_value(job.target)}"'
            )
        return labels

    def _shown(self, record: JobRecord, now: float) -> bool:
        """Final Jobs stay in /metrics for the retention period after they ended."""
        ended = record.job.metadata.terminated_at
        return ended is None or now - ended.timestamp() <= self._retention


def _restarts_line(record: JobRecord, labels: str) -> str:
    started = record.job.status.started
    if started is None:
        return ""
    return f"{RESTARTS.name}_total{{{labels}}} {float(started.observed_flink_job_restarts)!r}\n"


def _status_lines(record: JobRecord, labels: str) -> str:
    started = record.job.status.started
    if started is None:
        return ""
    return labels.join(_STATUS_PIECES[started.observed_flink_job_status])


def _state_lines(record: JobRecord, labels: str) -> str:
    return labels.join(_STATE_PIECES[record.job.state])


def _last_probe_line(record: JobRecord, labels: str) -> str:
    if record.last_probe_at is None:
        return ""
    return f"{LAST_PROBE.name}{{{labels}}} {float(record.last_probe_at)!r}\n"


_E = TypeVar("_E", JobState, FlinkJobStatus)
_LABEL_SET: Final = "\0"  # where a Job's label set goes; never in the text itself


def _enum_pieces(family: _Family, label: str, values: type[_E]) -> dict[_E, list[str]]:
    """Per current value, a Job's lines of an enum family (one per value, 1 for the current
    one) cut where its label set goes: ``label_set.join(pieces)`` is the text. The enum label
    comes last so a line has one per-Job part; the pieces are shared by every Job with the
    same value, where text kept per Job would cost memory for every Job."""
    return {
        current: "".join(
            f'{family.name}{{{_LABEL_SET},{label}="{value.value}"}} '
            f"{'1.0' if value is current else '0.0'}\n"
            for value in values
        ).split(_LABEL_SET)
        for current in values
    }


_STATUS_PIECES: Final = _enum_pieces(STATUS, "status", FlinkJobStatus)
_STATE_PIECES: Final = _enum_pieces(STATE, "state", JobState)
