"""Folding probe observations into a Job: its resource fields and its state machine."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobs import EPOCH, JID, LAGS, SETTINGS, absent, found, starting
from simulation import BASE, Run, budget, described, runs

from probe._core.fold import (
    FoldResult,
    FoldSettings,
    Observation,
    Presence,
    RestartsIncreased,
    Transitioned,
    fold,
    fold_changed,
)
from probe._core.model import (
    FailureReason,
    FlinkJobStatus,
    JobState,
    from_epoch,
    replace_model,
)
from probe._core.record import JobRecord

S = JobState
F = FlinkJobStatus

_RANK = {S.STARTING: 0, S.STARTED: 1, S.TERMINATING: 2, S.TERMINATED: 3, S.FAILED: 3, S.FINISHED: 3}


def fold_all(
    record: JobRecord, observations: Iterable[Observation], settings: FoldSettings = SETTINGS
) -> list[FoldResult]:
    results = []
    for observation in observations:
        result = fold(record, observation, settings)
        check_invariants(record, observation, result)
        results.append(result)
        record = result.record
    return results


def last(
    record: JobRecord, *observations: Observation, settings: FoldSettings = SETTINGS
) -> JobRecord:
    results = fold_all(record, observations, settings)
    return results[-1].record if results else record


def started_record(at: float = BASE + 10) -> JobRecord:
    record = last(starting(), found(at))
    assert record.job.state is S.STARTED
    return record


def as_shown(record: JobRecord) -> JobRecord:
    """The record as a store keeps it: the Job with its ``lastUpdateTime`` as shown."""
    return dataclasses.replace(record, job=record.shown_job)


def check_invariants(before: JobRecord, obs: Observation, result: FoldResult) -> None:
    """What holds after every fold, whatever the observation (of the Job as it is shown)."""
    old, new = before.shown_job, result.record.shown_job
    assert new.metadata.id == old.metadata.id
    assert new.spec == old.spec
    assert _RANK[old.state] <= _RANK[new.state], "the Job moved backwards"
    if old.state.is_final:
        assert new.state is old.state, "a final Job left its state"

    # Transition events are the legal path actually taken.
    moves = [e for e in result.changes if isinstance(e, Transitioned)]
    path = [old.state, *(m.target for m in moves)]
    assert all(m.source is path[i] for i, m in enumerate(moves))
    assert path[-1] is new.state

    # resourceVersion grows by exactly one with every stored change of the served Job; a
    # change of lastUpdateTime alone is not stored at once (JobBook.touch) and moves nothing else.
    changed = new.status != old.status
    bumped = changed and result.stored
    assert new.metadata.resource_version == old.metadata.resource_version + bumped
    if bumped:
        assert new.metadata.modified_at == from_epoch(obs.at)
    elif not changed:
        assert new == old
    else:
        assert result.record.job is before.job, "a quiet probe copied the Job model"
        assert old.status.started is not None
        assert new == replace_model(
            old,
            status=replace_model(
                old.status,
                started=replace_model(old.status.started, last_update_time=from_epoch(obs.at)),
            ),
        )

    # terminatedAt: set on entering a final state, never moved afterwards.
    if old.metadata.terminated_at is not None:
        assert new.metadata.terminated_at == old.metadata.terminated_at
    assert (new.metadata.terminated_at is not None) == new.state.is_final
    assert (new.status.failure is not None) == (new.state is S.FAILED)

    started, was = new.status.started, old.status.started
    if was is not None:
        assert started is not None, "status.started disappeared"
        assert started.transition_time == was.transition_time
        assert started.observed_flink_job_restarts >= was.observed_flink_job_restarts
    if started is not None:
        assert started.flink_job_id == JID
        assert started.last_update_time == from_epoch(obs.at)
        assert started.observed_flink_job_restarts == result.record.ledger.observed
        increases = [e for e in result.changes if isinstance(e, RestartsIncreased)]
        before_count = 0 if was is None else was.observed_flink_job_restarts
        if started.observed_flink_job_restarts > before_count:
            assert increases == [
                RestartsIncreased(before_count, started.observed_flink_job_restarts)
            ]
        else:
            assert increases == []
    if new.state is S.STARTING:
        assert started is None


# -- STARTING -> STARTED ------------------------------------------------------------------------
@pytest.mark.parametrize("status", [F.RUNNING, F.RESTARTING, F.FAILING, F.RECONCILING, F.SUSPENDED])
def test_starting_job_becomes_started_with_status_started_filled(status: FlinkJobStatus) -> None:
    result = fold(starting(), found(BASE + 5, status), SETTINGS)
    job = result.record.job
    assert job.state is S.STARTED
    assert result.changes[0] == Transitioned(S.STARTING, S.STARTED)
    started = job.status.started
    assert started is not None
    assert started.flink_job_id == JID
    assert started.transition_time == from_epoch(BASE + 5)
    assert started.last_update_time == from_epoch(BASE + 5)
    assert started.observed_flink_job_status is status
    assert started.observed_flink_job_restarts == 0
    assert job.metadata.resource_version == 2
    assert job.metadata.terminated_at is None


def test_transition_time_is_when_first_seen_started() -> None:
    record = last(starting(), found(BASE + 5), found(BASE + 15, F.RESTARTING), found(BASE + 25))
    started = record.job.status.started
    assert started is not None
    assert started.transition_time == from_epoch(BASE + 5)
    assert started.last_update_time == from_epoch(BASE + 25)
    assert started.observed_flink_job_status is F.RUNNING


@pytest.mark.parametrize("status", [F.INITIALIZING, F.CREATED])
def test_starting_job_seen_initializing_stays_starting(status: FlinkJobStatus) -> None:
    result = fold(starting(), found(BASE + 5, status), SETTINGS)
    assert result.record.job == starting().job
    assert result.changes == ()
    assert result.record.ledger.seen


# -- an unreachable or misbehaving cluster changes no state --------------------------------------
@pytest.mark.parametrize("presence", [Presence.UNREACHABLE, Presence.UNCONFIRMED])
def test_unreachable_cluster_changes_no_state_only_the_observed_status(presence: Presence) -> None:
    record = started_record()
    result = fold(record, absent(BASE + 20, presence), SETTINGS)
    job = result.record.job
    assert job.state is S.STARTED
    assert result.changes == ()
    assert job.status.started is not None
    assert job.status.started.observed_flink_job_status is F.UNKNOWN
    assert job.status.started.last_update_time == from_epoch(BASE + 20)
    assert job.metadata.resource_version == record.job.metadata.resource_version + 1
    assert result.record.last_probe_at == BASE + 20


@pytest.mark.parametrize("presence", [Presence.UNREACHABLE, Presence.UNCONFIRMED])
def test_unreachable_cluster_leaves_a_starting_job_untouched(presence: Presence) -> None:
    record = starting()
    result = fold(record, absent(BASE + 20 * 60, presence), SETTINGS)
    assert result.record.job == record.job
    assert result.record.last_probe_at == BASE + 20 * 60


# -- gone --------------------------------------------------------------------------------------
@pytest.mark.parametrize("grace", [1, 2, 3, 5])
def test_job_gone_for_grace_probes_in_a_row_fails_not_found(grace: int) -> None:
    settings = FoldSettings(not_found_grace=grace, start_timeout=600.0, lags=LAGS)
    record = started_record()
    gone = [absent(BASE + 20 + 10 * i, Presence.GONE) for i in range(grace)]
    almost = last(record, *gone[:-1], settings=settings)
    assert almost.job.state is S.STARTED
    failed = last(almost, gone[-1], settings=settings).job
    assert failed.state is S.FAILED
    assert failed.status.failure is not None
    assert failed.status.failure.reason is FailureReason.FLINK_JOB_NOT_FOUND
    assert failed.status.failure.failed_at == from_epoch(gone[-1].at)
    assert JID in failed.status.failure.message
    assert failed.metadata.terminated_at == from_epoch(gone[-1].at)


def test_found_in_between_resets_the_gone_count() -> None:
    record = last(
        started_record(),
        absent(BASE + 20, Presence.GONE),
        absent(BASE + 30, Presence.GONE),
        found(BASE + 40),
        absent(BASE + 50, Presence.GONE),
        absent(BASE + 60, Presence.GONE),
    )
    assert record.job.state is S.STARTED
    assert last(record, absent(BASE + 70, Presence.GONE)).job.state is S.FAILED


@pytest.mark.parametrize("presence", [Presence.UNREACHABLE, Presence.UNCONFIRMED])
def test_unclear_probe_does_not_count_as_gone(presence: Presence) -> None:
    record = last(
        started_record(),
        absent(BASE + 20, Presence.GONE),
        absent(BASE + 30, Presence.GONE),
        absent(BASE + 40, presence),
    )
    assert record.job.state is S.STARTED


def test_never_seen_starting_job_is_not_failed_by_gone_before_start_timeout() -> None:
    gone = [absent(BASE + t, Presence.GONE) for t in range(10, 600, 10)]
    record = last(starting(), *gone)
    assert record.job.state is S.STARTING
    assert record.missing_probes == 0


def test_never_seen_starting_job_fails_start_timeout() -> None:
    record = last(starting(), absent(BASE + 599.5, Presence.GONE))
    assert record.job.state is S.STARTING
    job = last(record, absent(BASE + 600, Presence.GONE)).job
    assert job.state is S.FAILED
    assert job.status.failure is not None
    assert job.status.failure.reason is FailureReason.START_TIMEOUT
    assert job.status.failure.failed_at == from_epoch(BASE + 600)
    assert job.status.started is None
    assert job.metadata.terminated_at == from_epoch(BASE + 600)


def test_seen_starting_job_that_disappears_fails_not_found() -> None:
    gone = [absent(BASE + t, Presence.GONE) for t in (20, 30, 40)]
    job = last(starting(), found(BASE + 10, F.INITIALIZING), *gone).job
    assert job.state is S.FAILED
    assert job.status.failure is not None
    assert job.status.failure.reason is FailureReason.FLINK_JOB_NOT_FOUND


# -- Flink's terminal statuses -------------------------------------------------------------------
@pytest.mark.parametrize("record", [starting(), started_record()], ids=["starting", "started"])
def test_flink_failed_fails_the_job_with_flinks_message(record: JobRecord) -> None:
    result = fold(record, found(BASE + 30, F.FAILED, message="java.io.IOException: disk"), SETTINGS)
    job = result.record.job
    assert job.state is S.FAILED
    assert job.status.failure is not None
    assert job.status.failure.reason is FailureReason.FLINK_JOB_FAILED
    assert job.status.failure.message == "java.io.IOException: disk"
    assert job.status.failure.failed_at == from_epoch(BASE + 30)
    assert job.metadata.terminated_at == from_epoch(BASE + 30)
    assert job.status.started is not None
    assert job.status.started.observed_flink_job_status is F.FAILED
    assert result.changes[-1] == Transitioned(S.STARTED, S.FAILED)


def test_flink_failed_without_a_message_still_says_why() -> None:
    job = last(started_record(), found(BASE + 30, F.FAILED)).job
    assert job.status.failure is not None
    assert job.status.failure.message


def test_started_then_canceled_records_the_path_through_terminating() -> None:
    result = fold(started_record(), found(BASE + 30, F.CANCELED), SETTINGS)
    assert result.changes[:2] == (
        Transitioned(S.STARTED, S.TERMINATING),
        Transitioned(S.TERMINATING, S.TERMINATED),
    )
    assert result.record.job.state is S.TERMINATED


@pytest.mark.parametrize(
    ("status", "final"),
    [(F.FINISHED, S.FINISHED), (F.CANCELED, S.TERMINATED), (F.FAILED, S.FAILED)],
)
def test_terminated_at_is_set_once_and_the_count_settles(
    status: FlinkJobStatus, final: JobState
) -> None:
    ended = last(started_record(), found(BASE + 30, status, raw=2))
    assert ended.job.state is final
    assert ended.job.metadata.terminated_at == from_epoch(BASE + 30)
    assert ended.probing, "a terminal job is read until its count settles"

    # Read for numRestarts until a read taken after the terminal sighting is credited.
    settling = [found(BASE + t, status, raw=2) for t in (40, 50, 60)]
    results = fold_all(ended, settling)
    settled = results[-1].record
    assert not settled.probing
    assert settled.job.status.started is not None
    assert settled.job.status.started.observed_flink_job_restarts == 2
    assert settled.job.status.started.observed_flink_job_status is status
    assert settled.job.metadata.terminated_at == from_epoch(BASE + 30)
    assert all(r.record.job.state is final for r in results)


def test_job_failed_not_found_is_not_probed_any_more() -> None:
    gone = [absent(BASE + t, Presence.GONE) for t in (20, 30, 40)]
    record = last(started_record(), *gone)
    assert record.job.state is S.FAILED
    assert not record.probing


def test_unchanged_fold_keeps_resource_version_and_modified_at() -> None:
    record = starting()
    after = last(record, absent(BASE + 5, Presence.UNREACHABLE), found(BASE + 6, F.INITIALIZING))
    assert after.job.metadata.resource_version == 1
    assert after.job.metadata.modified_at == from_epoch(BASE)


def test_resource_version_grows_by_one_per_stored_change() -> None:
    """STARTED, then a probe that moves only lastUpdateTime (shown at once, stored later: no
    new version), then the cluster unreachable (UNKNOWN: stored)."""
    observations = [found(BASE + 10), found(BASE + 20), absent(BASE + 30, Presence.UNREACHABLE)]
    results = fold_all(starting(), observations)
    assert [r.stored for r in results] == [True, False, True]
    assert [r.record.job.metadata.resource_version for r in results] == [2, 2, 3]
    assert [r.record.job.metadata.modified_at for r in results] == [
        from_epoch(BASE + 10),
        from_epoch(BASE + 10),
        from_epoch(BASE + 30),
    ]
    assert [
        r.record.shown_job.status.started.last_update_time
        for r in results
        if r.record.shown_job.status.started
    ] == [from_epoch(o.at) for o in observations]


# -- documents ---------------------------------------------------------------------------------
def test_record_document_round_trips() -> None:
    record = last(started_record(), found(BASE + 30, F.RESTARTING, raw=1))
    assert JobRecord.from_document(record.to_document()) == as_shown(record)


def test_record_document_keeps_unknown_raw_ages() -> None:
    # A raw read before any epoch was seen waits, with its age unknown (infinite; JSON null).
    observation = Observation(at=BASE + 30, presence=Presence.UNREACHABLE, num_restarts=4)
    record = last(starting(), observation)
    assert record.ledger.pending[-1].max_age == math.inf
    assert JobRecord.from_document(record.to_document()) == as_shown(record)


# -- random observation sequences ----------------------------------------------------------------
_ENDS = {F.FINISHED: S.FINISHED, F.CANCELED: S.TERMINATED, F.FAILED: S.FAILED}


@budget(ci=400, deep=10_000)
@given(runs())
def test_simulated_job_folds_within_the_bound(run: Run) -> None:
    """A simulated Flink job seen through lagging sources: every fold keeps the invariants, and
    the served restart count is monotonic and never above the truth."""
    record = starting(created=BASE)
    with described(run):
        for answer in run.answers:
            observation = run.observation(answer)
            result = fold(record, observation, SETTINGS_FOR(run))
            check_invariants(record, observation, result)
            assert_same_as_the_general_fold(record, observation, SETTINGS_FOR(run), result)
            record = result.record
            assert record.ledger.observed <= run.true_count(answer)
            if observation.presence is Presence.FOUND and observation.status in _ENDS:
                assert record.job.state is _ENDS[observation.status]
            assert JobRecord.from_document(record.to_document()) == as_shown(record)


def assert_same_as_the_general_fold(
    record: JobRecord, observation: Observation, settings: FoldSettings, result: FoldResult
) -> None:
    """`fold` takes a shortcut in the steady state: it must come to what the general path
    would (the ledger is folded the same way on both), but for a change of the time alone,
    which is not a stored change (no new resourceVersion)."""
    general = fold_changed(record, observation, settings, result.record.ledger)
    if result.stored:
        assert general == result
    else:
        assert general.changes == result.changes == ()
        job = replace_model(result.record.shown_job, metadata=general.record.job.metadata)
        assert dataclasses.replace(result.record, job=job) == general.record


def SETTINGS_FOR(run: Run) -> FoldSettings:
    return FoldSettings(not_found_grace=3, start_timeout=600.0, lags=run.lags)


def _observation(at: float, fields: tuple[Any, ...]) -> Observation:
    presence, status, start_time, start_time_age, raw, raw_age, message = fields
    return Observation(at, presence, status, start_time, start_time_age, raw, raw_age, message)


# Built once: hypothesis spends more on building a strategy than on drawing from it.
_observation_fields = st.tuples(
    st.sampled_from(Presence),
    st.sampled_from(FlinkJobStatus),
    st.sampled_from([None, EPOCH, EPOCH + 1, EPOCH + 60_000]),
    st.sampled_from([None, 0.0, 1.5, 30.0]),
    st.none() | st.integers(0, 50),
    st.sampled_from([0.0, 20.0, 45.0, math.inf]),
    st.sampled_from([None, "", "java.lang.RuntimeException: boom"]),
)
observation_sequences = st.lists(
    st.tuples(st.integers(1, 400), _observation_fields), min_size=1, max_size=40
).map(
    # Arbitrary observations at increasing times (quarter seconds): nothing need be consistent.
    lambda steps: [
        _observation(BASE + sum(gap for gap, _ in steps[: i + 1]) / 4, fields)
        for i, (_, fields) in enumerate(steps)
    ]
)


@budget(ci=400, deep=10_000)
@given(
    st.sampled_from([starting(), started_record()]),
    observation_sequences,
    st.integers(1, 4),
    st.sampled_from([0.0, 30.0, 600.0]),
)
def test_arbitrary_observations_never_break_the_job(
    record: JobRecord, observations: list[Observation], grace: int, start_timeout: float
) -> None:
    settings = FoldSettings(not_found_grace=grace, start_timeout=start_timeout, lags=LAGS)
    for observation in observations:
        result = fold(record, observation, settings)
        check_invariants(record, observation, result)
        assert_same_as_the_general_fold(record, observation, settings, result)
        assert JobRecord.from_document(result.record.to_document()) == as_shown(result.record)
        record = result.record


@budget(ci=200, deep=5_000)
@given(observation_sequences, st.data())
def test_final_jobs_never_leave(observations: list[Observation], data: st.DataObject) -> None:
    ending = data.draw(
        st.sampled_from(
            [
                found(BASE + 1, F.FINISHED),
                found(BASE + 1, F.CANCELED),
                found(BASE + 1, F.FAILED, message="boom"),
            ]
        )
    )
    ended = last(started_record(at=BASE), ending)
    assert ended.job.state.is_final
    for result in fold_all(ended, observations):
        assert result.record.job.state is ended.job.state
        assert result.record.job.status.failure == ended.job.status.failure
        assert result.record.job.metadata.terminated_at == ended.job.metadata.terminated_at


@budget(ci=400, deep=10_000)
@given(runs(), st.data())
def test_a_crash_that_loses_the_unstored_times_lowers_no_count(
    run: Run, data: st.DataObject
) -> None:
    """Records that moved only in their times are shown before they are stored. A `kill -9`
    reloads the last stored record instead: folding on from it, no count ever shown before the
    crash goes down, and the count stays within the truth."""
    crash_after = data.draw(st.integers(0, len(run.answers)), label="crash after probe")
    settings = SETTINGS_FOR(run)
    record = stored = starting(created=BASE)
    shown = 0
    with described(run):
        for index, answer in enumerate(run.answers):
            if index == crash_after:
                record = JobRecord.from_document(stored.to_document())
            result = fold(record, run.observation(answer), settings)
            record = result.record
            if result.stored:
                stored = record
            assert record.ledger.observed >= shown, "a count shown before the crash went down"
            assert record.ledger.observed <= run.true_count(answer)
            shown = max(shown, record.ledger.observed)
