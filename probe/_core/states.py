"""The Job state machine: one table, and the paths through it.

Pure logic, no I/O. ``TRANSITIONS`` is the only statement of which moves are legal; the
README's diagram is generated from it (``mermaid()``) and a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from probe._core.model import FINAL_STATES, FlinkJobStatus, JobState

S = JobState
F = FlinkJobStatus

TRANSITIONS: Final[Mapping[JobState, frozenset[JobState]]] = {
    S.STARTING: frozenset({S.STARTED, S.TERMINATING, S.TERMINATED, S.FINISHED, S.FAILED}),
    S.STARTED: frozenset({S.TERMINATING, S.TERMINATED, S.FINISHED, S.FAILED}),
    S.TERMINATING: frozenset({S.TERMINATED, S.FAILED}),
    S.TERMINATED: frozenset(),
    S.FAILED: frozenset(),
    S.FINISHED: frozenset(),
}

# Why each move happens, for the README diagram (same keys as TRANSITIONS).
TRIGGERS: Final[Mapping[tuple[JobState, JobState], str]] = {
    (S.STARTING, S.STARTED): "RUNNING, RESTARTING, FAILING, RECONCILING, SUSPENDED",
    (S.STARTING, S.TERMINATING): "CANCELLING",
    (S.STARTED, S.TERMINATING): "CANCELLING",
    (S.STARTING, S.TERMINATED): "CANCELED",
    (S.STARTED, S.TERMINATED): "CANCELED",
    (S.TERMINATING, S.TERMINATED): "CANCELED",
    (S.STARTING, S.FINISHED): "FINISHED",
    (S.STARTED, S.FINISHED): "FINISHED",
    (S.STARTING, S.FAILED): "FAILED, StartTimeout, FlinkJobNotFound",
    (S.STARTED, S.FAILED): "FAILED, FlinkJobNotFound",
    (S.TERMINATING, S.FAILED): "FAILED, FlinkJobNotFound",
}

# The Job states a Flink job has necessarily passed through once Flink reports a status, in
# order. A probe can miss any of them (it sees snapshots), so a Job follows this route from
# wherever it is: a Job STARTED that is next seen CANCELED records TERMINATING, then TERMINATED.
_ROUTES: Final[Mapping[FlinkJobStatus, tuple[JobState, ...]]] = {
    F.INITIALIZING: (),
    F.CREATED: (),
    F.UNKNOWN: (),
    F.RUNNING: (S.STARTED,),
    F.RESTARTING: (S.STARTED,),
    F.FAILING: (S.STARTED,),
    F.RECONCILING: (S.STARTED,),
    F.SUSPENDED: (S.STARTED,),
    F.CANCELLING: (S.STARTED, S.TERMINATING),
    F.CANCELED: (S.STARTED, S.TERMINATING, S.TERMINATED),
    F.FINISHED: (S.STARTED, S.FINISHED),
    F.FAILED: (S.STARTED, S.FAILED),
}


class IllegalTransition(ValueError):
    """A move the table does not allow; the message names both states."""

    def __init__(self, source: JobState, target: JobState) -> None:
        if source in FINAL_STATES:
            why = f"{source} is final"
        else:
            allowed = ", ".join(sorted(TRANSITIONS[source])) or "nothing"
            why = f"{source} may move to {allowed}"
        super().__init__(f"illegal Job transition {source} -> {target}: {why}")
        self.source = source
        self.target = target


def check_transition(source: JobState, target: JobState) -> None:
    """Raise IllegalTransition unless the table allows ``source -> target``."""
    if target not in TRANSITIONS[source]:
        raise IllegalTransition(source, target)


def route(current: JobState, flink_status: FlinkJobStatus) -> tuple[JobState, ...]:
    """The legal sequence of Job states that ``flink_status`` implies from ``current``.

    Empty when the status moves nothing (already there, a final Job, a status that implies no
    Job state such as INITIALIZING or UNKNOWN, or RUNNING again while TERMINATING). States the
    Job has already passed are skipped; a move the table forbids from ``current`` is replaced
    by the nearest legal one: a TERMINATING Job whose Flink job FINISHED becomes TERMINATED,
    since the Job did terminate but "finished successfully" is not what was asked of it.
    """
    if current in FINAL_STATES:
        return ()
    wanted = _ROUTES[flink_status]
    if current in wanted:
        wanted = wanted[wanted.index(current) + 1 :]
    elif current is S.TERMINATING:
        # TERMINATING only ever moves to a final state; earlier stations are behind it.
        wanted = tuple(s for s in wanted if s in FINAL_STATES)
    if current is S.TERMINATING and wanted == (S.FINISHED,):
        wanted = (S.TERMINATED,)
    steps: list[JobState] = []
    source = current
    for target in wanted:
        check_transition(source, target)
        steps.append(target)
        source = target
    return tuple(steps)


def mermaid() -> str:
    """The state diagram as Mermaid text, generated from TRANSITIONS and TRIGGERS."""
    lines = ["stateDiagram-v2", "    [*] --> STARTING"]
    for source, targets in TRANSITIONS.items():
        for target in sorted(targets, key=list(JobState).index):
            lines.append(f"    {source} --> {target}: {TRIGGERS[source, target]}")
    lines.extend(f"    {state} --> [*]" for state in JobState if state in FINAL_STATES)
    return "\n".join(lines)
