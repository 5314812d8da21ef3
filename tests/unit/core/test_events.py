"""Events from the fold: which reasons a Job's history produces, and each root cause once."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from jobs import EPOCH, SETTINGS, found, starting
from simulation import BASE

from probe._core.causes import CausesSeen, RootCause
from probe._core.events import Event, Reason, job_created, job_events
from probe._core.fold import Observation, fold
from probe._core.model import FlinkJobStatus
from probe._core.record import JobRecord


def cause(timestamp: int, name: str = "java.lang.RuntimeException") -> RootCause:
    return RootCause(name, f"boom at {timestamp}", timestamp, "map (1/1)")


def with_causes(observation: Observation, *causes: RootCause) -> Observation:
    return replace(observation, root_causes=causes)


def play(record: JobRecord, *observations: Observation) -> tuple[JobRecord, list[Event]]:
    """Fold ``observations`` in order; the record after them and every event they made."""
    events: list[Event] = []
    for observation in observations:
        result = fold(record, observation, SETTINGS)
        record = result.record
        events += job_events(record.job, result.changes, observation.at)
    return record, events


AGE = SETTINGS.lags.metrics_max_age


def test_a_job_started_restarted_twice_and_failed_over_tells_each_step_once() -> None:
    """A raw count is credited once a later overview confirms its epoch (see the rule)."""
    t = BASE + 10 + AGE  # the epoch has been current for longer than a read's age
    successor = EPOCH + 100_000
    _, events = play(
        starting(),
        found(BASE + 10, raw=0),
        with_causes(found(t, raw=1), cause(1)),
        found(t + 5, raw=1),
        with_causes(found(t + 6, raw=2), cause(1), cause(2)),
        found(t + 11, raw=2),
        found(t + 100, start_time=successor),
        found(t + 101 + AGE, start_time=successor, raw=0),
        found(t + 106 + AGE, start_time=successor, status=FlinkJobStatus.CANCELED, raw=0),
    )

    reasons = [event.reason for event in events]
    assert reasons == [
        Reason.JOB_STARTED,
        Reason.JOB_RESTARTED,
        Reason.JOB_RESTARTED,
        Reason.JOBMANAGER_FAILOVER,
        Reason.JOB_RESTARTED,
        Reason.JOB_TERMINATING,
        Reason.JOB_TERMINATED,
    ]
    restarted = [event.spec.details for event in events if event.reason is Reason.JOB_RESTARTED]
    assert [(d["restartsFrom"], d["restartsTo"]) for d in restarted] == [(0, 1), (1, 2), (2, 3)]
    assert [[c["timestamp"] for c in d["rootCauses"]] for d in restarted] == [[1], [2], []]
    failover = events[3].spec.details
    assert failover == {"oldStartTime": EPOCH, "newStartTime": successor}
    assert len({event.metadata.id for event in events}) == len(events)


def test_a_change_derived_again_gives_the_same_event_id() -> None:
    """After a crash the daemon derives the same change from the same stored Job: one event."""
    record = starting()
    first = fold(record, found(BASE + 10, raw=0), SETTINGS)
    again = fold(record, found(BASE + 11, raw=0), SETTINGS)

    [started] = job_events(first.record.job, first.changes, BASE + 10)
    [started_again] = job_events(again.record.job, again.changes, BASE + 11)
    assert started.metadata.id == started_again.metadata.id
    assert job_created(record.job, BASE).metadata.id != started.metadata.id


def test_causes_wait_in_the_record_for_the_restart_they_explain() -> None:
    """Causes read before the count is credited travel with the record, stored and loaded."""
    t = BASE + 10 + AGE
    record, _ = play(starting(), found(BASE + 10, raw=0))
    record, events = play(record, with_causes(found(t, raw=1), cause(5)))
    assert events == []
    loaded = JobRecord.from_document(record.to_document())
    assert loaded.causes == (cause(5),)

    record, events = play(loaded, found(t + 5, raw=1))
    [restarted] = events
    assert restarted.spec.details["rootCauses"] == [cause(5).to_dict()]
    assert "boom at 5" in restarted.spec.message
    assert record.causes == ()


histories = st.lists(
    st.tuples(st.integers(0, 50), st.sampled_from(["A", "B"])), unique=True, max_size=30
)


@given(histories, st.lists(st.integers(1, 8), max_size=10))
def test_every_entry_of_a_growing_history_is_taken_at_most_once(
    entries: list[tuple[int, str]], windows: list[int]
) -> None:
    """Flink shows the newest entries of a history that grows by timestamp; each read here shows
    the newest ``window`` of what exists so far. Nothing is taken twice, and every entry newer
    than all taken before is taken."""
    history = [cause(timestamp, name) for timestamp, name in sorted(entries)]
    seen = CausesSeen()
    taken: list[RootCause] = []
    for step, window in enumerate(windows):
        upto = len(history) * (step + 1) // len(windows)
        read = history[max(0, upto - window) : upto][::-1]  # newest first, as Flink answers
        newest_taken = max((c.timestamp for c in taken), default=-1)
        fresh = seen.new(read)
        assert {c for c in read if c.timestamp > newest_taken} <= set(fresh)
        taken += fresh
        seen = seen.taking(fresh)
    assert len(taken) == len(set(taken))
