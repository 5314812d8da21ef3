"""A simulated Flink cluster for tests and the demo: Flink 2.3's REST answers, lags and faults."""

from probe.testing._flink import (
    ANY_ENDPOINT,
    DEMO_JOBS,
    Endpoint,
    FakeCluster,
    FakeFlinkServer,
    FakeJob,
    Fault,
    FaultKind,
    demo_cluster,
    serve_in_thread,
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
    "demo_cluster",
    "serve_in_thread",
]
