"""The read plan (probe/_core/reads.py): numRestarts is asked only while a Job's overview entry is
new, yet the count ends where reading every round would take it.

The properties drive the plan through the simulated histories of test_restarts.py: the
overview shows (state, start-time, last-modification) as of its lagging snapshot, the plan
decides per probe whether the metric is read, and the restart rule gets only those reads.
"""

from __future__ import annotations

import itertools
import math

from hypothesis import event, given
from hypothesis import strategies as st
from simulation import (
    JID,
    Answer,
    Run,
    budget,
    described,
    replay_planned,
    runs,
    with_quiet_tail,
)

from probe._core.model import FlinkJobStatus
from probe._core.reads import ReadPlan, Signature
from probe._core.restarts import RestartLedger


def quiet_tail(run: Run, data: st.DataObject) -> Run:
    return with_quiet_tail(run, data.draw(st.integers(1, 60), label="ticks between probes"))


@budget(ci=1000, deep=20_000)
@given(runs(), st.data())
def test_a_planned_count_is_a_monotonic_lower_bound(run: Run, data: st.DataObject) -> None:
    run = quiet_tail(run, data)
    ledgers, used = replay_planned(run, ReadPlan(refresh=0 if data.draw(st.booleans()) else 60.0))
    with described(run):
        previous = 0
        for answer, ledger in zip(used, ledgers, strict=True):
            assert previous <= ledger.observed <= run.true_count(answer)
            previous = ledger.observed
    reads = sum(1 for a in used if a.metrics_at is not None)
    event(f"reads skipped: {'some' if reads < len(run.answers) else 'none'}")


@budget(ci=1000, deep=20_000)
@given(runs(process_restarts=False, terminal=False), st.data())
def test_happy_path_reaches_the_true_count_with_reads_skipped(
    run: Run, data: st.DataObject
) -> None:
    """No JobManager restarts: after a quiet stretch the planned count is Flink's, though no
    refresh ever forces a read."""
    run = quiet_tail(run, data)
    ledgers, used = replay_planned(run, ReadPlan(refresh=math.inf))
    with described(run):
        assert ledgers[-1].observed == run.history.true_count(run.answers[-1].at)
    event(f"tail probes that read: {sum(a.metrics_at is not None for a in used[-5:])} of 5")


@budget(ci=1000, deep=20_000)
@given(runs(process_restarts=False, terminal=True), st.data())
def test_terminal_job_settles_on_its_final_count_with_reads_skipped(
    run: Run, data: st.DataObject
) -> None:
    """A finished job is read until a value from after the end is credited: its count settles
    on Flink's final count, as reading every round does. Unless the count gave up waiting
    (give_up_after) before such a read answered: then it is a lower bound, as ever."""
    run = quiet_tail(run, data)
    ledgers, used = replay_planned(run, ReadPlan(refresh=math.inf))
    with described(run):
        assert ledgers[-1].settled
        if gave_up(run, used, ledgers):
            assert ledgers[-1].observed <= run.history.final_count
        else:
            assert ledgers[-1].observed == run.history.final_count
    event(f"gave up waiting for a final read: {gave_up(run, used, ledgers)}")


def gave_up(run: Run, answers: list[Answer], ledgers: list[RestartLedger]) -> bool:
    """Whether a terminal job's count settled without a read from after its end (none
    answered within give_up_after, e.g. the cluster was away)."""
    final = ledgers[-1]
    if not final.settled or final.terminal_seen_at is None:
        return False
    settled_at = next(a.at for a, ledger in zip(answers, ledgers, strict=True) if ledger.settled)
    return settled_at >= final.terminal_seen_at + run.lags.give_up_after


@budget(ci=1000, deep=20_000)
@given(runs(process_restarts=False), st.data())
def test_in_one_jobmanager_process_the_planned_count_ends_where_reading_every_round_does(
    run: Run, data: st.DataObject
) -> None:
    """Lags, missing answers and terminal jobs included: once the job is quiet, skipping reads
    has lost nothing that reading every round would have counted by then.

    It can lose when the metric shows a restart a probe before the overview does and the
    count the plan reads a probe later is gone before it is credited: the JobManager process
    changed (failover, or a restart keeping start-time), or the job ended and no read came
    within give_up_after. Reading every round had that count; the plan's is lower, never
    higher. `tests/long/plan_loss.py` measures how often (tests/long/README.md)."""
    run = quiet_tail(run, data)
    ledgers, used = replay_planned(run, ReadPlan(refresh=math.inf))
    every_round, _ = replay_planned(run, ReadPlan(refresh=0))
    with described(run):
        if gave_up(run, used, ledgers):
            assert ledgers[-1].observed <= every_round[-1].observed
        else:
            assert ledgers[-1].observed == every_round[-1].observed


# -- the plan alone ----------------------------------------------------------------------------
RUNNING: Signature = (FlinkJobStatus.RUNNING, 1_000, 2_000)


def test_a_new_job_is_read_until_a_read_from_after_its_sighting_answers() -> None:
    plan = ReadPlan(refresh=math.inf)
    assert plan.wants(JID, RUNNING, 100.0)
    plan.saw(JID, RUNNING, 100.0, 3, max_age=20.0)  # snapshot may be from 80 s: before 100 s
    assert plan.wants(JID, RUNNING, 110.0)
    plan.saw(JID, RUNNING, 110.0, None, max_age=20.0)  # no value: []
    assert plan.wants(JID, RUNNING, 120.0)
    plan.saw(JID, RUNNING, 120.0, 3, max_age=20.0)  # snapshot from 100 s or later: covered
    assert not plan.wants(JID, RUNNING, 130.0)
    assert not plan.wants(JID, RUNNING, 10_000.0)


def test_a_moved_last_modification_start_time_or_state_is_read_again() -> None:
    for moved in (
        (FlinkJobStatus.RUNNING, 1_000, 2_001),
        (FlinkJobStatus.RUNNING, 1_001, 2_000),
        (FlinkJobStatus.FINISHED, 1_000, 2_000),
    ):
        plan = ReadPlan(refresh=math.inf)
        plan.saw(JID, RUNNING, 100.0, 0, max_age=0.0)
        assert not plan.wants(JID, RUNNING, 110.0)
        assert plan.wants(JID, moved, 110.0)
        plan.saw(JID, moved, 110.0, 1, max_age=20.0)
        assert plan.wants(JID, moved, 120.0)


def test_a_job_without_last_modification_is_read_every_round() -> None:
    plan = ReadPlan(refresh=math.inf)
    for at in (100.0, 110.0, 120.0):
        assert plan.wants(JID, None, at)
        plan.saw(JID, None, at, 0, max_age=0.0)


def test_refresh_reads_each_job_once_per_period_at_its_own_phase() -> None:
    refresh = 60.0
    jids = [f"{n:08x}" + "0" * 24 for n in range(0, 2**32, 2**32 // 12)]
    plan = ReadPlan(refresh)
    for jid in jids:
        plan.saw(jid, RUNNING, 0.0, 0, max_age=0.0)
    due_at: dict[str, list[float]] = {jid: [] for jid in jids}
    for second in range(1, 181):
        for jid in jids:
            if plan.wants(jid, RUNNING, float(second)):
                due_at[jid].append(float(second))
                plan.saw(jid, RUNNING, float(second), 0, max_age=0.0)
    for jid, times in due_at.items():
        assert len(times) in (2, 3), (jid, times)  # once per minute over three minutes
        assert all(b - a == refresh for a, b in itertools.pairwise(times))
    first_reads = sorted(times[0] for times in due_at.values())
    assert len(set(first_reads)) == len(jids)  # spread over the period, not one burst


def test_refresh_zero_reads_every_round() -> None:
    plan = ReadPlan(refresh=0)
    plan.saw(JID, RUNNING, 100.0, 0, max_age=0.0)
    assert plan.wants(JID, RUNNING, 100.5)


def test_jobs_no_longer_probed_are_forgotten() -> None:
    plan = ReadPlan(refresh=math.inf)
    other = "f" * 32
    plan.saw(JID, RUNNING, 100.0, 0, max_age=0.0)
    plan.saw(other, RUNNING, 100.0, 0, max_age=0.0)
    plan.keep_only({other})
    assert plan.wants(JID, RUNNING, 110.0)
    assert not plan.wants(other, RUNNING, 110.0)
