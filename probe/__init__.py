"""flink-probe: Apache Flink jobs as Ververica Platform Job resources, exported to Prometheus.

The pure core is importable on its own: the Job resource model, the state machine, the
restart lower bound and folding an observation into a Job.
"""

from probe._core.fold import FoldSettings, Observation, Presence, fold
from probe._core.model import FailureReason, FlinkJobStatus, Job, JobState
from probe._core.record import JobRecord
from probe._core.restarts import Lags, RestartLedger, Sighting, observe
from probe._core.states import TRANSITIONS, IllegalTransition, route
from probe._version import __version__

__all__ = [
    "TRANSITIONS",
    "FailureReason",
    "FlinkJobStatus",
    "FoldSettings",
    "IllegalTransition",
    "Job",
    "JobRecord",
    "JobState",
    "Lags",
    "Observation",
    "Presence",
    "RestartLedger",
    "Sighting",
    "__version__",
    "fold",
    "observe",
    "route",
]
