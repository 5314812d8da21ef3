"""What skipping numRestarts reads costs the count: the read plan against reading every round.

    .venv/bin/python tests/long/plan_loss.py                 # 20,000 simulated histories
    .venv/bin/python tests/long/plan_loss.py --runs 2000 --seed 7

Each history is a random one of tests/support/simulation.py (task restarts, JobManager
failovers up to every third probe, both lags, missing answers), followed by a quiet tail of
fresh probes. It
is replayed twice through the restart rule as the daemon reads: with the plan of
probe/_core/reads.py (no refresh, so only changes in the overview trigger reads) and reading every
round (`probe.metrics_refresh: 0`). Printed: how many reads the plan made, how often its final
count is below reading every round's (and by how much), and what share of all true restarts
each counted (restarts that leave no trace, such as several failovers between two probes, are
counted by neither). A planned count above the every-round count or above the truth is a
failure (exit 1): the plan may only ever lose counts, never invent them.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from simulation import (
    ProcessStart,
    RandomChooser,
    generate_run,
    replay_planned,
    with_quiet_tail,
)

from probe._core.reads import ReadPlan


def main() -> int:
    parser = argparse.ArgumentParser(prog="plan_loss.py")
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    choose = RandomChooser(rng)
    reads = {"plan": 0, "every round": 0}
    below = lost = with_failover = below_with_failover = overshoots = 0
    counted = {"plan": 0, "every round": 0, "truth": 0}
    for _ in range(args.runs):
        run = with_quiet_tail(generate_run(choose), rng.randint(1, 60))
        planned, planned_answers = replay_planned(run, ReadPlan(refresh=math.inf))
        every, every_answers = replay_planned(run, ReadPlan(refresh=0))
        reads["plan"] += sum(a.metrics_at is not None for a in planned_answers)
        reads["every round"] += sum(a.metrics_at is not None for a in every_answers)
        truth = run.history.true_count(run.answers[-1].at)
        failover = any(p.how is ProcessStart.FAILOVER for p in run.history.processes)
        with_failover += failover
        final, final_every = planned[-1].observed, every[-1].observed
        if final > final_every or final > truth:
            overshoots += 1
            print(f"VIOLATION: planned {final}, every round {final_every}, truth {truth}")
            print(run.describe())
        if final < final_every:
            below += 1
            below_with_failover += failover
            lost += final_every - final
        counted["plan"] += final
        counted["every round"] += final_every
        counted["truth"] += truth
    n = args.runs
    print(
        f"{n:,} histories ({with_failover:,} with JobManager failovers), seed {args.seed}\n"
        f"numRestarts reads: plan {reads['plan']:,}, every round {reads['every round']:,} "
        f"({reads['plan'] / reads['every round']:.1%})\n"
        f"final count below every round's: {below:,} histories ({below / n:.2%}; "
        f"{below_with_failover:,} of them with failovers), {lost:,} restarts in all\n"
        f"share of the true restarts counted: plan {counted['plan'] / counted['truth']:.2%}, "
        f"every round {counted['every round'] / counted['truth']:.2%}\n"
        f"above every round's or the truth: {overshoots}"
    )
    return 1 if overshoots else 0


if __name__ == "__main__":
    sys.exit(main())
