"""The Job state machine (DESIGN.md, "State machine"): one table, legal paths only."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simulation import budget

from probe._core.model import FINAL_STATES, FlinkJobStatus, JobState
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

EDGES = {(source, target) for source, targets in TRANSITIONS.items() for target in targets}
PAIRS = [(state, status) for state in JobState for status in FlinkJobStatus]

# Where a Job ends after one observation of each Flink status (DESIGN.md's table). A
# TERMINATING Job whose Flink job FINISHED ends TERMINATED: it did stop, but it was not asked
# to finish, and TERMINATING -> FINISHED is not a legal move.
_NOT_YET = (F.INITIALIZING, F.CREATED, F.UNKNOWN)
_RUNNING_LIKE = (F.RUNNING, F.RESTARTING, F.FAILING, F.RECONCILING, F.SUSPENDED)
_TERMINAL = {F.CANCELED: S.TERMINATED, F.FINISHED: S.FINISHED, F.FAILED: S.FAILED}


def expected_end(state: JobState, status: FlinkJobStatus) -> JobState:
    if state in FINAL_STATES:
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
    """Follow ``steps`` from ``state``, asserting each move is in the table."""
    for target in steps:
        assert target in TRANSITIONS[state], f"{state} -> {target} is not in TRANSITIONS"
        state = target
    return state


@pytest.mark.parametrize(("state", "status"), PAIRS)
def test_route_takes_legal_moves_to_the_expected_state(
    state: JobState, status: FlinkJobStatus
) -> None:
    steps = route(state, status)
    assert walk(state, steps) is expected_end(state, status)
    assert len(set(steps)) == len(steps)


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
@pytest.mark.parametrize("status", list(FlinkJobStatus))
def test_final_states_never_move(state: JobState, status: FlinkJobStatus) -> None:
    assert TRANSITIONS[state] == frozenset()
    assert route(state, status) == ()


def test_final_states_are_exactly_the_dead_ends() -> None:
    assert {state for state, targets in TRANSITIONS.items() if not targets} == FINAL_STATES
    assert set(TRANSITIONS) == set(JobState)


# The order in which a Job moves: it never returns to an earlier station.
_RANK = {S.STARTING: 0, S.STARTED: 1, S.TERMINATING: 2, S.TERMINATED: 3, S.FAILED: 3, S.FINISHED: 3}


def test_table_only_moves_forward() -> None:
    assert all(_RANK[source] < _RANK[target] for source, target in EDGES)


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
        if before in FINAL_STATES:
            assert state is before


def test_started_then_canceled_records_terminating_then_terminated() -> None:
    assert route(S.STARTED, F.CANCELED) == (S.TERMINATING, S.TERMINATED)


def test_started_then_running_again_moves_nothing() -> None:
    assert route(S.STARTED, F.RUNNING) == ()


def test_terminating_job_seen_running_again_stays_terminating() -> None:
    assert route(S.TERMINATING, F.RUNNING) == ()


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s in JobState for t in JobState if t not in TRANSITIONS[s]],
)
def test_illegal_transition_names_both_states(source: JobState, target: JobState) -> None:
    with pytest.raises(IllegalTransition) as raised:
        check_transition(source, target)
    message = str(raised.value)
    assert re.search(rf"\b{source}\b", message)
    assert re.search(rf"\b{target}\b", message)
    assert (raised.value.source, raised.value.target) == (source, target)


@pytest.mark.parametrize(("source", "target"), sorted(EDGES))
def test_legal_transition_passes(source: JobState, target: JobState) -> None:
    check_transition(source, target)


def test_mermaid_draws_exactly_the_table() -> None:
    diagram = mermaid()
    drawn = {
        (S(match[1]), S(match[2]))
        for match in re.finditer(r"^\s*([A-Z]+) --> ([A-Z]+)\b", diagram, re.MULTILINE)
    }
    assert drawn == EDGES
    assert set(TRIGGERS) == EDGES
    for source, target in EDGES:
        assert f"{source} --> {target}: {TRIGGERS[source, target]}" in diagram
    assert "[*] --> STARTING" in diagram
    for state in FINAL_STATES:
        assert f"{state} --> [*]" in diagram
