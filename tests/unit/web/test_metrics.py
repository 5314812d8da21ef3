"""The per-Job families as `JobSeriesRenderer` writes them, parsed back by prometheus_client.

A Job's state and status lines are its label set joined with text made once per value, so
every combination of values is checked here, with label values that need escaping.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs import JOB_ID, folded, found, starting
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from simulation import BASE

from probe._core.model import FlinkJobStatus, JobState, replace_model
from probe._core.record import JobRecord
from probe._runtime.book import JobBook
from probe._store.sqlite import SQLiteStore
from probe._web.metrics import JobSeriesRenderer

AWKWARD = 'orders "eu"\\west\nline two'


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore.open(tmp_path / "state.db") as opened:
        yield opened


def shown_as(record: JobRecord, state: JobState, status: FlinkJobStatus) -> JobRecord:
    """The record with its state and observed status set (whether reachable or not), and a
    deployment name whose label value needs escaping."""
    job = record.job
    started = job.status.started
    assert started is not None
    status_ = replace_model(
        job.status,
        state=state,
        started=replace_model(started, observed_flink_job_status=status),
    )
    metadata = replace_model(job.metadata, deployment_name=AWKWARD)
    return JobRecord(replace_model(job, status=status_, metadata=metadata), record.ledger, 0, BASE)


def samples(text: str, family: str) -> list[Sample]:
    parsed = text_string_to_metric_families(text)
    return [s for f in parsed if f.name == family for s in f.samples]


@pytest.mark.parametrize(("state", "status"), list(itertools.product(JobState, FlinkJobStatus)))
def test_every_state_and_status_renders_one_current_series_with_every_label(
    store: SQLiteStore, state: JobState, status: FlinkJobStatus
) -> None:
    record = shown_as(folded(starting(), found(BASE + 10, raw=2)), state, status)
    text = "".join(JobSeriesRenderer(JobBook(store, [record]), retention=float("inf")).chunks())

    labels = {
        "deployment": AWKWARD,
        "flink_job_id": JOB_ID.replace("-", ""),
        "job_id": JOB_ID,
        "namespace": "default",
        "target": "prod",
    }
    for family, label, values, current in (
        ("flink_probe_job_state", "state", JobState, state),
        ("flink_probe_job_status", "status", FlinkJobStatus, status),
    ):
        series = samples(text, family)
        assert [s.labels for s in series] == [{**labels, label: v.value} for v in values]
        assert {s.labels[label] for s in series if s.value == 1.0} == {current.value}
        assert sum(s.value for s in series) == 1.0
    assert [(s.labels, s.value) for s in samples(text, "flink_probe_job_restarts")] == [
        (labels, 0.0)  # the ledger has not credited the first read yet
    ]
    assert [s.value for s in samples(text, "flink_probe_job_last_probe_timestamp_seconds")] == [
        BASE
    ]


def test_a_job_without_status_started_shows_only_its_state(store: SQLiteStore) -> None:
    text = "".join(JobSeriesRenderer(JobBook(store, [starting()]), retention=float("inf")).chunks())

    state = samples(text, "flink_probe_job_state")
    assert {s.labels["state"]: s.value for s in state if s.value} == {"STARTING": 1.0}
    assert samples(text, "flink_probe_job_status") == []
    assert samples(text, "flink_probe_job_restarts") == []
