"""A simulated Flink cluster for tests and the demo: Flink 2.3's REST answers, lags and faults.

``FakeCluster`` is the model (jobs, restarts, failovers, scripted faults and cache lags);
``FakeFlinkServer`` serves it on a real socket (``serve_in_thread`` for synchronous tests).
``demo_cluster`` and ``story_events`` are the demo story; ``python -m probe.testing`` serves it.
"""

from probe.testing._flink import (
    ANY_ENDPOINT,
    Endpoint,
    FakeCluster,
    FakeFlinkServer,
    FakeJob,
    Fault,
    FaultKind,
    serve_in_thread,
)
from probe.testing._story import (
    DEMO_JOBS,
    StoryEvent,
    demo_cluster,
    play,
    story_cluster,
    story_events,
)

__all__ = [
    "ANY_ENDPOINT",
    "DEMO_JOBS",
    "Endpoint",
    "FakeCluster",
    "FakeFlinkServer",
    "FakeJob",
    "Fault",
    "FaultKind",
    "StoryEvent",
    "demo_cluster",
    "play",
    "serve_in_thread",
    "story_cluster",
    "story_events",
]
