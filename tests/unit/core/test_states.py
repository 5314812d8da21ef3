"""The Job state machine: the table in the code is the one written out here by hand."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simulation import budget

from probe._core.model import FINAL_STATES, FlinkJobStatus, JobState, from_epoch, new_job
from probe._core.states import (
    TRANSITIONS,
    TRIGGERS,
    IllegalTransition,
    check_transition,
    mermaid,
    route,
)

S = JobState
F = FlinkJobStatus

# The state machine of the Job resource, written out (not derived from TRANSITIONS): every
# legal move, and what triggers it (Flink statuses, or a failure the daemon decides).
EXPECTED_MOVES: dict[tuple[JobState, JobState], set[str]] = {
    (S.STARTING, S.STARTED): {"RUNNING", "RESTARTING", "FAILING", "RECONCILING", "SUSPENDED"},
    (S.STARTING, S.TERMINATING): {"CANCELLING"},
    (S.STARTED, S.TERMINATING): {"CANCELLING"},
    (S.STARTING, S.TERMINATED): {"CANCELED"},
    (S.STARTED, S.TERMINATED): {"CANCELED"},
    (S.TERMINATING, S.TERMINATED): {"CANCELED"},
    (S.STARTING, S.FINISHED): {"FINISHED"},
    (S.STARTED, S.FINISHED): {"FINISHED"},
    (S.STARTING, S.FAILED): {"FAILED", "StartTimeout", "FlinkJobNotFound"},
    (S.STARTED, S.FAILED): {"FAILED", "FlinkJobNotFound"},
    (S.TERMINATING, S.FAILED): {"FAILED", "FlinkJobNotFound"},
}
EXPECTED_FINAL = {S.TERMINATED, S.FAILED, S.FINISHED}
ALL_PAIRS = [(source, target) for source in JobState for target in JobState]

# Where a Job ends after one observation of each Flink status. A TERMINATING Job whose Flink
# job FINISHED ends TERMINATED: it did stop, but it was not asked to finish, and TERMINATING ->
# FINISHED is not a legal move.
_NOT_YET = (F.INITIALIZING, F.CREATED, F.UNKNOWN)
_RUNNING_LIKE = (F.RUNNING, F.RESTARTING, F.FAILING, F.RECONCILING, F.SUSPENDED)
_TERMINAL = {F.CANCELED: S.TERMINATED, F.FINISHED: S.FINISHED, F.FAILED: S.FAILED}


def expected_end(state: JobState, status: FlinkJobStatus) -> JobState:
    if state in EXPECTED_FINAL:
        return state
    if state is S.TERMINATING:
        if status is F.FINISHED:
            return S.TERMINATED
        return _TERMINAL.get(status, S.TERMINATING)
    if status in _NOT_YET:
        return state
    if status in _RUNNING_LIKE:
        return S.STARTED
    if status is F.CANCELLING:
        return S.TERMINATING
    return _TERMINAL[status]


def walk(state: JobState, steps: tuple[JobState, ...]) -> JobState:
    """Follow ``steps`` from ``state``, asserting each move is a legal one."""
    for target in steps:
        assert (state, target) in EXPECTED_MOVES, f"{state} -> {target} is not a legal move"
        state = target
    return state


def test_the_table_is_the_state_machine() -> None:
    edges = {(source, target) for source, targets in TRANSITIONS.items() for target in targets}
    assert edges == set(EXPECTED_MOVES)
    assert set(TRANSITIONS) == set(JobState)
    assert FINAL_STATES == EXPECTED_FINAL


def test_a_new_job_is_starting() -> None:
    job = new_job(
        job_id="3f1da3c8-6f22-430f-9200-eda014ea5319",
        namespace="default",
        deployment_name="orders",
        target="prod",
        spec={},
        now=from_epoch(1_700_000_000.0),
    )
    assert job.status.state is S.STARTING


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS)
def test_check_transition_allows_exactly_the_legal_moves(
    source: JobState, target: JobState
) -> None:
    if (source, target) in EXPECTED_MOVES:
        check_transition(source, target)
        return
    with pytest.raises(IllegalTransition) as raised:
        check_transition(source, target)
    message = str(raised.value)
    assert re.search(rf"\b{source}\b", message)
    assert re.search(rf"\b{target}\b", message)
    assert (raised.value.source, raised.value.target) == (source, target)


@pytest.mark.parametrize(("state", "status"), [(s, f) for s in JobState for f in FlinkJobStatus])
def test_route_takes_legal_moves_to_the_expected_state(
    state: JobState, status: FlinkJobStatus
) -> None:
    steps = route(state, status)
    assert walk(state, steps) is expected_end(state, status)
    assert len(set(steps)) == len(steps)


@pytest.mark.parametrize("state", sorted(EXPECTED_FINAL))
@pytest.mark.parametrize("status", list(FlinkJobStatus))
def test_final_states_never_move(state: JobState, status: FlinkJobStatus) -> None:
    assert route(state, status) == ()


# The order in which a Job moves: it never returns to an earlier station.
_RANK = {S.STARTING: 0, S.STARTED: 1, S.TERMINATING: 2, S.TERMINATED: 3, S.FAILED: 3, S.FINISHED: 3}


@budget(ci=500, deep=20_000)
@given(
    st.sampled_from([S.STARTING, S.STARTED, S.TERMINATING]),
    st.lists(st.sampled_from(list(FlinkJobStatus)), max_size=30),
)
def test_any_status_sequence_folds_through_legal_paths(
    start: JobState, statuses: list[FlinkJobStatus]
) -> None:
    state = start
    for status in statuses:
        before = state
        state = walk(state, route(state, status))
        assert _RANK[before] <= _RANK[state]
        if before in EXPECTED_FINAL:
            assert state is before


def test_started_then_canceled_records_terminating_then_terminated() -> None:
    assert route(S.STARTED, F.CANCELED) == (S.TERMINATING, S.TERMINATED)


def test_started_then_running_again_moves_nothing() -> None:
    assert route(S.STARTED, F.RUNNING) == ()


def test_terminating_job_seen_running_again_stays_terminating() -> None:
    assert route(S.TERMINATING, F.RUNNING) == ()


def test_mermaid_draws_the_state_machine() -> None:
    diagram = mermaid()
    drawn = {
        (S(match[1]), S(match[2])): set(match[3].split(", "))
        for match in re.finditer(r"^\s*([A-Z]+) --> ([A-Z]+): (.*)$", diagram, re.MULTILINE)
    }
    assert drawn == EXPECTED_MOVES
    assert {edge: set(label.split(", ")) for edge, label in TRIGGERS.items()} == EXPECTED_MOVES
    assert "[*] --> STARTING" in diagram
    ends = set(re.findall(r"^\s*([A-Z]+) --> \[\*\]$", diagram, re.MULTILINE))
    assert ends == EXPECTED_FINAL
