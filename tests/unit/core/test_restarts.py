"""Properties of the restart lower bound ("confirm before credit"), on simulated jobs.

Every generated run is a true Flink history read through an overview and a metric store that lag
independently (tests/support/simulation.py), start-times stamped by a JobManager clock within the
configured skew bound K of the daemon's. The daemon relies on: ``observed`` never goes down,
never exceeds the truth, reaches the truth on the happy path and across a failover that follows
a read by more than K, settles on a terminal job's final count, and survives its own restarts
(the ledger stored as JSON and read back). A clock beyond K breaks the bound: the assumption
is real.

``HYPOTHESIS_PROFILE=deep`` searches far longer (50,000 histories for the bound).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from hypothesis import Phase, event, example, find, given, settings
from hypothesis import strategies as st
from simulation import (
    BASE,
    TICK,
    Answer,
    JobManagerClock,
    Process,
    ProcessStart,
    Run,
    TrueHistory,
    at_tick,
    budget,
    described,
    epoch_ms,
    failovers_after_a_read,
    naive_observed,
    replay,
    runs,
    tick_of,
)

from probe._core.restarts import Lags, PendingRaw, RestartLedger, Sighting, observe, widen


def json_round_trip(ledger: RestartLedger) -> RestartLedger:
    """What the store does: strict JSON (no Infinity) out and back."""
    return RestartLedger.from_dict(json.loads(json.dumps(ledger.to_dict(), allow_nan=False)))


def first_terminal_sighting(run: Run) -> float | None:
    return next((a.at for a in run.answers if run.sighting(a).terminal), None)


def naive_overshoots(run: Run) -> bool:
    return any(n > run.true_count(a) for a, n in zip(run.answers, naive_observed(run), strict=True))


def overshoots(run: Run) -> bool:
    ledgers = replay(run)
    return any(
        led.observed > run.true_count(a) for a, led in zip(run.answers, ledgers, strict=True)
    )


def without_successor_rule(run: Run) -> Run:
    """The same run read by a daemon with ``max_clock_skew: off``."""
    return replace(run, lags=replace(run.lags, max_clock_skew=None))


def last_count(run: Run) -> int:
    return replay(run)[-1].observed


def exact_at_the_end(run: Run) -> bool:
    return last_count(run) == run.true_count(run.answers[-1])


def standby_failover_run() -> Run:
    """Three task restarts, then a failover at 60 s; the overview shows the new start-time at
    once while the metric store still serves the old process's count, as a former standby did."""
    failover = at_tick(240)
    history = TrueHistory(
        processes=(
            Process(BASE, epoch_ms(BASE), ProcessStart.SUBMISSION, (BASE + 1, BASE + 2, BASE + 3)),
            Process(failover, epoch_ms(failover), ProcessStart.FAILOVER),
        )
    )
    lags = Lags(overview_max_age=3.0, metrics_max_age=20.0)
    answers = [Answer(BASE + t, BASE + t, BASE + t, 20.0) for t in (10.0, 20.0, 30.0, 40.0, 50.0)]
    answers += [
        Answer(failover + 0.5, failover + 0.5, failover - 1.0, 20.0),  # new epoch, old raw 3
        Answer(failover + 2.0, failover + 2.0, failover - 1.0, 20.0),
        *(Answer(failover + t, failover + t, failover + t, 20.0) for t in (10.0, 20.0, 30.0, 40.0)),
    ]
    return Run(history, 0.0, 3.0, lags, tuple(answers))


# -- on every generated history, at every probe ------------------------------------------------
@budget(ci=2500, deep=50_000)
@given(runs())
@example(standby_failover_run())
def test_observed_is_a_monotonic_lower_bound(run: Run) -> None:
    with described(run):
        check_bound(run)
    # How hard the search pushes (pytest --hypothesis-show-statistics).
    event(f"the naive rule over-counts: {naive_overshoots(run)}")
    event(f"JobManager process changes: {min(run.history.process_restarts, 3)}")
    exact = exact_at_the_end(run)
    event(f"observed equals the truth at the last probe: {exact}")
    if any(p.how is ProcessStart.FAILOVER for p in run.history.processes):
        off = exact_at_the_end(without_successor_rule(run))
        event(f"with a failover, exact at the end: {exact}; with the successor rule off: {off}")


def check_bound(run: Run) -> None:
    previous = RestartLedger()
    newest_epoch: int | None = None
    epochs_after_the_first = 0
    for answer, ledger in zip(run.answers, replay(run), strict=True):
        assert previous.observed <= ledger.observed, "observed went down"
        assert ledger.observed <= run.true_count(answer), "observed exceeds the true count"

        # Each newer start-time seen is a JobManager restart, and counts at least once.
        epoch = run.sighting(answer).epoch
        if epoch is not None and (newest_epoch is None or epoch > newest_epoch):
            epochs_after_the_first += newest_epoch is not None
            newest_epoch = epoch
        assert ledger.observed >= epochs_after_the_first

        if previous.settled:
            assert ledger == previous, "a settled count changed"
        if ledger.terminal_seen_at is not None:
            give_up_at = ledger.terminal_seen_at + run.lags.give_up_after
            assert ledger.settled or answer.at < give_up_at, "terminal job never settles"
        else:
            assert not ledger.settled, "settled before the job was seen terminal"
        previous = ledger


@budget(ci=1000, deep=20_000)
@given(runs(process_restarts=False, terminal=False), st.data())
def test_happy_path_reaches_the_true_count(run: Run, data: st.DataObject) -> None:
    """No JobManager restarts: once the job is quiet, a fresh probe seen at least M after the
    epoch was first seen is credited one probe (at least E) later, and equals Flink's count."""
    metrics_ticks = round(run.lags.metrics_max_age / TICK)
    overview_ticks = round(run.lags.overview_max_age / TICK)
    quiet_from = max(tick_of(run.answers[-1].at), tick_of(run.history.last_change))
    first = quiet_from + data.draw(st.integers(1, 60), label="quiet ticks")
    shown = first + max(1, metrics_ticks + data.draw(st.integers(0, 20), label="extra ticks"))
    credited = shown + max(1, overview_ticks + data.draw(st.integers(0, 20), label="extra ticks"))
    run = run.with_answers(run.fresh_answer(at_tick(t)) for t in (first, shown, credited))
    with described(run):
        assert replay(run)[-1].observed == run.history.true_count(at_tick(credited))


@budget(ci=1000, deep=20_000)
@given(runs(process_restarts=False, terminal=True), st.data())
def test_terminal_job_settles_on_its_final_count(run: Run, data: st.DataObject) -> None:
    """A finished job is read for numRestarts until a read taken after the terminal sighting
    arrives (or give_up_after passed); then its count is final and equals Flink's."""
    assert run.history.terminal_at is not None
    metrics_ticks = round(run.lags.metrics_max_age / TICK)
    last_probe = tick_of(run.answers[-1].at)
    seen_final = max(
        last_probe + 1, tick_of(run.history.terminal_at) + data.draw(st.integers(0, 60))
    )
    read_final = seen_final + max(1, metrics_ticks + data.draw(st.integers(0, 20)))
    run = run.with_answers(run.fresh_answer(at_tick(t)) for t in (seen_final, read_final))
    with described(run):
        check_settles(run)


def check_settles(run: Run) -> None:
    ledgers = replay(run)
    terminal_seen = first_terminal_sighting(run)
    assert terminal_seen is not None
    settled_at = next(i for i, ledger in enumerate(ledgers) if ledger.settled)
    final_read_at = next(
        i
        for i, answer in enumerate(run.answers)
        if run.sighting(answer).raw is not None and answer.at - answer.raw_max_age >= terminal_seen
    )
    assert run.answers[settled_at].at >= terminal_seen
    assert all(ledger == ledgers[settled_at] for ledger in ledgers[settled_at:])
    if settled_at < final_read_at:
        # Gave up waiting for a read of the final count: still a lower bound, never more.
        assert run.answers[settled_at].at >= terminal_seen + run.lags.give_up_after
    else:
        assert settled_at == final_read_at
        assert ledgers[settled_at].observed == run.history.final_count


@budget(ci=500, deep=10_000)
@given(runs())
def test_ledger_survives_json(run: Run) -> None:
    for ledger in replay(run):
        assert json_round_trip(ledger) == ledger


@budget(ci=1000, deep=20_000)
@given(runs(), st.data())
def test_daemon_restart_mid_history_changes_nothing(run: Run, data: st.DataObject) -> None:
    """The store keeps the ledger as JSON; a daemon that dies and reloads it continues exactly
    as one that never stopped."""
    split = data.draw(st.integers(0, len(run.answers)), label="split after probe")
    before = replay(run, run.answers[:split])
    stored = json_round_trip(before[-1] if before else RestartLedger())
    after = replay(run, run.answers[split:], ledger=stored)
    assert before + after == replay(run)


def test_infinite_max_age_survives_strict_json() -> None:
    pending = (PendingRaw(BASE, 3, math.inf),)
    ledger = RestartLedger(
        epoch=1, epoch_first_seen=BASE, epoch_current_until=BASE, pending=pending
    )
    assert json.loads(json.dumps(ledger.to_dict(), allow_nan=False))["pending"] == [[BASE, 3, None]]
    assert json_round_trip(ledger) == ledger


@budget(ci=1000, deep=20_000)
@given(failovers_after_a_read())
def test_a_failover_more_than_k_after_a_read_loses_no_restart(run: Run) -> None:
    """The raw read before the JobManager died is credited when its successor's start-time
    shows up; confirming before crediting alone drops it at the seal."""
    with described(run):
        check_bound(run)
        assert exact_at_the_end(run)
        assert last_count(without_successor_rule(run)) < run.true_count(run.answers[-1])


def test_a_jobmanager_clock_ahead_beyond_the_bound_can_over_count() -> None:
    """The bound K is an assumption the lower bound rests on: with the JobManagers' clock ahead
    of it, a raw of the successor reads as older than its start and is counted twice."""
    search = settings(max_examples=5000, phases=[Phase.generate], database=None)
    run = find(runs(clock=JobManagerClock.AHEAD_BEYOND_BOUND), overshoots, settings=search)
    assert not overshoots(without_successor_rule(run)), run.describe()


# -- the naive rule over-counts: the simulation really exercises the lag -----------------------
def test_naive_rule_overshoots_somewhere_in_the_simulation() -> None:
    # Only generate: shrinking a found history is slow and adds nothing to "it exists".
    search = settings(max_examples=5000, phases=[Phase.generate], database=None)
    run = find(runs(), naive_overshoots, settings=search)
    assert all(
        ledger.observed <= run.true_count(answer)
        for answer, ledger in zip(run.answers, replay(run), strict=True)
    ), run.describe()


def test_naive_rule_overshoots_on_a_standby_failover() -> None:
    run = standby_failover_run()
    assert naive_overshoots(run), run.describe()
    assert naive_observed(run)[-1] == 3 + 1 + 3  # the old count credited twice
    observed = [ledger.observed for ledger in replay(run)]
    assert observed == [0, 0, 0, 3, 3, 4, 4, 4, 4, 4, 4]
    assert run.history.final_count == 4


# -- the rule's steps, one scenario each (docs/design.md, "The steps") -------------------------
LAGS = Lags(overview_max_age=3.0, metrics_max_age=20.0)


def feed(
    *steps: tuple[float, Sighting], ledger: RestartLedger | None = None, lags: Lags = LAGS
) -> list[int]:
    current = RestartLedger() if ledger is None else ledger
    observed = []
    for now, sighting in steps:
        current = observe(current, BASE + now, sighting, lags)
        observed.append(current.observed)
    return observed


def test_discovered_job_starts_from_its_raw_count_after_metrics_max_age() -> None:
    seen = [(float(t), Sighting(epoch=1, raw=7, raw_max_age=20.0)) for t in range(0, 50, 10)]
    # The raw read at 20 s is the first taken M after the epoch was first seen; a probe at
    # least E later confirms no newer epoch had begun by then.
    assert feed(*seen) == [0, 0, 0, 7, 7]


def test_restart_that_keeps_the_start_time_is_counted() -> None:
    steps = [(float(t), Sighting(epoch=1, raw=5, raw_max_age=20.0)) for t in range(0, 40, 10)]
    steps += [(float(t), Sighting(epoch=1, raw=1, raw_max_age=20.0)) for t in range(40, 70, 10)]
    # 5 in the first process, 1 for the process restart, 1 in the new process.
    assert feed(*steps)[-1] == 5 + 1 + 1


def test_stale_smaller_start_time_is_ignored() -> None:
    steps = [
        (0.0, Sighting(epoch=2)),
        (10.0, Sighting(epoch=1)),
        (20.0, Sighting(epoch=2)),
    ]
    assert feed(*steps) == [0, 0, 0]


def started_at(now: float) -> int:
    """The start-time (ms) a JobManager that takes the job over at ``BASE + now`` stamps."""
    return epoch_ms(BASE + now)


FIRST_EPOCH = started_at(-100.0)


@pytest.mark.parametrize(
    ("successor_started", "max_clock_skew", "count"),
    [
        (30.0, 1.0, 4 + 1),
        (20.5, 1.0, 0 + 1),  # within K of the read: the raw may be the successor's
        (30.0, None, 0 + 1),  # the successor rule off
    ],
)
def test_a_raw_read_before_its_successors_start_time_is_credited_at_the_seal(
    successor_started: float, max_clock_skew: float | None, count: int
) -> None:
    steps = [
        (0.0, Sighting(epoch=FIRST_EPOCH, raw=0, raw_max_age=20.0)),
        (20.0, Sighting(epoch=FIRST_EPOCH, raw=4, raw_max_age=20.0)),
        (25.0, Sighting()),  # the JobManager died before an overview confirmed the read
        (40.0, Sighting(epoch=started_at(successor_started), raw=0, raw_max_age=20.0)),
    ]
    lags = Lags(overview_max_age=3.0, metrics_max_age=20.0, max_clock_skew=max_clock_skew)
    assert feed(*steps, lags=lags) == [0, 0, 0, count]


def test_a_raw_read_within_m_of_its_epochs_first_sighting_stays_dropped_at_the_seal() -> None:
    steps = [
        (0.0, Sighting(epoch=FIRST_EPOCH)),
        (15.0, Sighting(epoch=FIRST_EPOCH, raw=4, raw_max_age=20.0)),  # maybe the epoch before
        (40.0, Sighting(epoch=started_at(30.0))),
    ]
    assert feed(*steps) == [0, 0, 1]


def test_a_lower_raw_before_the_successors_start_time_seals_first() -> None:
    steps = [(float(t), Sighting(epoch=FIRST_EPOCH, raw=5, raw_max_age=20.0)) for t in (0, 20, 30)]
    steps += [
        (40.0, Sighting(epoch=FIRST_EPOCH, raw=1, raw_max_age=20.0)),  # kept its start-time
        (50.0, Sighting(epoch=started_at(45.0))),
    ]
    # 5, 1 for the process restart that kept start-time, 1, and 1 for the failover.
    assert feed(*steps) == [0, 0, 5, 5, 5 + 1 + 1 + 1]


def test_terminal_job_settles_on_a_read_taken_after_the_terminal_sighting() -> None:
    ledger = RestartLedger()
    for now, sighting in [
        (0.0, Sighting(epoch=1, terminal=True, raw=2, raw_max_age=20.0)),
        (10.0, Sighting(raw=2, raw_max_age=20.0)),
        (20.0, Sighting(raw=2, raw_max_age=20.0)),
    ]:
        ledger = observe(ledger, BASE + now, sighting, LAGS)
    assert ledger.settled
    assert ledger.observed == 2


def test_terminal_job_without_metrics_settles_after_give_up() -> None:
    ledger = observe(RestartLedger(), BASE, Sighting(epoch=1, terminal=True), LAGS)
    ledger = observe(ledger, BASE + LAGS.give_up_after - 1, Sighting(), LAGS)
    assert not ledger.settled
    ledger = observe(ledger, BASE + LAGS.give_up_after, Sighting(), LAGS)
    assert ledger.settled
    assert observe(ledger, BASE + 1000, Sighting(epoch=2, raw=9, raw_max_age=0.0), LAGS) == ledger


@budget(ci=300, deep=10_000)
@given(runs(), st.data())
def test_the_steady_shortcut_comes_to_the_rules_steps(run: Run, data: st.DataObject) -> None:
    """observe() skips the rule's steps for a sighting of the current epoch with no raw and no
    end (most probes, as the read plan leaves most rounds without a read): on every probe of
    every history, with the metric read or not, it must come to the ledger the steps give."""
    from probe._core.restarts import _steps

    read = data.draw(st.lists(st.booleans(), min_size=len(run.answers), max_size=len(run.answers)))
    ledger = RestartLedger()
    for answer, asked in zip(run.answers, read, strict=True):
        if not asked:
            answer = Answer(answer.at, answer.overview_at, None, math.inf, answer.overview_max_age)
        sighting = run.sighting(answer)
        after = observe(ledger, answer.at, sighting, run.lags)
        steps = ledger if ledger.settled else _steps(ledger, answer.at, sighting, run.lags)
        assert after == steps
        ledger = after


def test_the_working_draft_has_the_ledgers_fields() -> None:
    """observe() works on a mutable copy of the ledger, built field by field in order."""
    from dataclasses import fields

    from probe._core.restarts import _Draft

    assert [f.name for f in fields(_Draft)] == [f.name for f in fields(RestartLedger)]


# -- a takeover by another daemon, whose clock is off -------------------------------------------
SKEWS = st.sampled_from([TICK, 2 * TICK, 4 * TICK, 8 * TICK])
"""The bound S on the skew between the daemons sharing a store (state.max_clock_skew)."""


def two_holders(
    run: Run, split: int, skew: float, offset: float, *, widened: bool = True
) -> list[RestartLedger]:
    """The ledger after each answer when the first daemon (on the simulation's clock) probes up
    to ``split`` and a second, whose clock is ``offset`` ahead, takes over from the stored
    ledger, widened by the skew bound ``skew``. The JobManagers' clock is within K of the first
    daemon's, so within K + ``skew`` of the second's: its K. Its first read has an unknown age,
    as after any start."""
    before = replay(run, run.answers[:split])
    current = json_round_trip(before[-1] if before else RestartLedger())
    if widened:
        current = widen(current, skew)
    k = run.lags.max_clock_skew
    lags = replace(run.lags, max_clock_skew=None if k is None else k + skew)
    after = []
    for index, answer in enumerate(run.answers[split:]):
        if index == 0:
            answer = replace(answer, raw_max_age=math.inf)
        current = observe(current, answer.at + offset, run.sighting(answer), lags)
        after.append(current)
    return before + after


@st.composite
def takeovers(draw: st.DrawFn) -> tuple[Run, int, float, float]:
    """A run, the probe after which a second daemon takes over, the skew bound, and how far
    ahead (or behind, negative) of the first the second daemon's clock is."""
    run = draw(runs())
    split = draw(st.integers(0, len(run.answers)), label="taken over after probe")
    skew = draw(SKEWS, label="skew bound")
    ticks = round(skew / TICK)
    offset = draw(st.integers(-ticks, ticks), label="second daemon's clock ticks ahead") * TICK
    return run, split, skew, offset


def failover_then_a_takeover_ahead() -> tuple[Run, int, float, float]:
    """Three restarts, a failover seen at once, then a takeover by a daemon 2 s ahead that reads
    the old process's count from the metric store M - 2 s later."""
    failover = at_tick(240)
    history = TrueHistory(
        processes=(
            Process(BASE, epoch_ms(BASE), ProcessStart.SUBMISSION, (BASE + 1, BASE + 2, BASE + 3)),
            Process(failover, epoch_ms(failover), ProcessStart.FAILOVER),
        )
    )
    lags = Lags(overview_max_age=0.0, metrics_max_age=20.0, max_clock_skew=None)
    answers = [Answer(BASE + t, BASE + t, BASE + t, 20.0) for t in (10.0, 20.0, 30.0, 40.0, 50.0)]
    answers += [
        Answer(failover, failover, failover, 20.0),  # the new epoch seals 3; then the takeover
        Answer(failover + 1.0, failover + 1.0, failover + 1.0, 20.0),
        Answer(failover + 18.0, failover + 18.0, failover - 1.0, 20.0),  # the old process's 3
        Answer(failover + 19.0, failover + 19.0, failover + 19.0, 20.0),
    ]
    return Run(history, 0.0, 20.0, lags, tuple(answers)), 6, 2.0, 2.0


@budget(ci=1500, deep=30_000)
@given(takeovers())
@example(failover_then_a_takeover_ahead())
def test_a_takeover_by_a_daemon_with_a_skewed_clock_keeps_the_bound(
    takeover: tuple[Run, int, float, float],
) -> None:
    run, split, skew, offset = takeover
    with described(run):
        ledgers = two_holders(run, split, skew, offset)
        for previous, (answer, ledger) in zip(
            [RestartLedger(), *ledgers], zip(run.answers, ledgers, strict=True), strict=False
        ):
            assert previous.observed <= ledger.observed, "observed went down"
            assert ledger.observed <= run.true_count(answer), "observed exceeds the true count"


def test_without_widening_a_successor_ahead_credits_the_old_processs_count_again() -> None:
    """The first daemon sees a failover's new epoch at once; the second, 2 s ahead, reads the
    metric store's last snapshot of the old process M - 2 s later. On its own clock that read
    cannot predate the epoch's first sighting; only the widened sighting shows that it can."""
    run, split, skew, offset = failover_then_a_takeover_ahead()

    unwidened = two_holders(run, split, skew, offset, widened=False)
    widened = two_holders(run, split, skew, offset)

    assert run.true_count(run.answers[-1]) == 4
    # The old process's 3 credited again (7); the next fresh 0 then reads as a counter that
    # went back within the epoch (8).
    assert [led.observed for led in unwidened][-2:] == [7, 8]
    assert [led.observed for led in widened] == [0, 0, 3, 3, 3, 4, 4, 4, 4]
