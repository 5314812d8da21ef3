"""The demo story: five jobs of one simulated cluster, and what happens to them over time.

``flink-probe demo`` plays it against the real daemon, ``python -m probe.testing`` serves it,
and tests take a fixed moment of it (``demo_cluster``). Seconds after the start:

- ``orders`` and ``payments`` restart every 3 and 4 seconds (task failures Flink recovers);
- ``sessionizer`` runs without a hitch;
- ``broken-etl`` restarts at 1 and 2 s, then fails for good at 5 s;
- ``nightly-report`` finishes at 3 s;
- at 12 s the JobManager fails over (high availability): every running job gets a new
  ``start-time`` and Flink's ``numRestarts`` starts again from 0.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from probe.testing._flink import FakeCluster

DEMO_JOBS: Final = {
    "orders": "3f1da3c86f22430f9200eda014ea5319",
    "payments": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
    "sessionizer": "5e5510a12e5e4f0b8c1d2e3f4a5b6c7d",
    "nightly-report": "0f0e0d0c0b0a09080706050403020100",
    "broken-etl": "deadbeefdeadbeefdeadbeefdeadbeef",
}
"""Job name -> Flink job id, fixed so that the Job ids are the same at every run."""

RESTART_PERIODS: Final = {"orders": 3.0, "payments": 4.0}
BROKEN_RESTARTS_AT: Final = (1.0, 2.0)
FINISH_AT: Final = 3.0
FAIL_AT: Final = 5.0
FAILOVER_AT: Final = 12.0
OVERVIEW_LAG: Final = 0.5
"""The simulated overview cache; a daemon's overview_max_age must be at least this."""
METRICS_LAG: Final = 1.0
"""The simulated metric store; a daemon's metrics_max_age must be at least this."""


@dataclass(order=True, frozen=True, slots=True)
class StoryEvent:
    """Something that happens to the cluster ``at`` seconds into the story."""

    at: float
    order: int
    act: Callable[[FakeCluster], None] = field(compare=False)
    say: str | None = field(compare=False)
    """What to tell a watcher (None: a routine restart, visible in the table anyway)."""
    every: float | None = field(compare=False, default=None)


def story_cluster(speed: float = 1.0) -> FakeCluster:
    """The cluster at the start of the story: five running jobs."""
    cluster = FakeCluster(overview_lag=OVERVIEW_LAG / speed, metrics_lag=METRICS_LAG / speed)
    for name, jid in DEMO_JOBS.items():
        cluster.submit(name, jid)
    return cluster


def demo_cluster(cluster: FakeCluster, at: float = 6.0) -> FakeCluster:
    """``cluster`` with the story's jobs as they are ``at`` seconds in, played at once."""
    for name, jid in DEMO_JOBS.items():
        cluster.submit(name, jid)
    for event in _timeline(story_events(), until=at):
        event.act(cluster)
    return cluster


def story_events(speed: float = 1.0) -> list[StoryEvent]:
    """The story's first events; periodic ones stand for all their repetitions."""
    events = [
        StoryEvent(
            FINISH_AT / speed,
            1,
            lambda c: c.finish(DEMO_JOBS["nightly-report"]),
            "Flink: nightly-report finished",
        ),
        StoryEvent(
            FAIL_AT / speed,
            2,
            lambda c: c.fail(DEMO_JOBS["broken-etl"], "the input topic 'clicks' does not exist"),
            "Flink: broken-etl failed (no more restarts allowed)",
        ),
        StoryEvent(
            FAILOVER_AT / speed,
            3,
            lambda c: c.jobmanager_restart(keep_jobs=True),
            "Flink: JobManager failover, numRestarts back to 0; flink-probe adds 1",
        ),
    ]
    events += [
        StoryEvent(at / speed, 10 + i, lambda c: c.restart(DEMO_JOBS["broken-etl"]), None)
        for i, at in enumerate(BROKEN_RESTARTS_AT)
    ]
    events += [
        StoryEvent(period / speed, 20 + i, _restarter(name), None, every=period / speed)
        for i, (name, period) in enumerate(RESTART_PERIODS.items())
    ]
    return events


async def play(
    cluster: FakeCluster,
    events: list[StoryEvent],
    sleep: Callable[[float], Awaitable[None]],
    announce: Callable[[str], None] = lambda text: None,
    after: float = 0.0,
) -> None:
    """Act the story out on the cluster on time, from ``after`` seconds into it (the events
    until then are taken as played)."""
    begun = time.monotonic() - after
    for event in _timeline(events):
        if event.at <= after and after > 0:
            continue
        await sleep(max(0.0, begun + event.at - time.monotonic()))
        event.act(cluster)
        if event.say is not None:
            announce(event.say)


def _timeline(events: list[StoryEvent], until: float = float("inf")) -> Iterator[StoryEvent]:
    """The events in order of time (periodic ones repeated), up to ``until`` seconds."""
    pending = list(events)
    heapq.heapify(pending)
    while pending and pending[0].at <= until:
        event = heapq.heappop(pending)
        yield event
        if event.every is not None:
            again = StoryEvent(event.at + event.every, event.order, event.act, None, event.every)
            heapq.heappush(pending, again)


def _restarter(name: str) -> Callable[[FakeCluster], None]:
    def restart(cluster: FakeCluster) -> None:
        cluster.restart(DEMO_JOBS[name], message=f"{name}: a task failed (demo)")

    return restart
