"""flink-probe: Apache Flink jobs as Ververica Platform Job resources, exported to Prometheus.

The pure core is importable on its own: the Job resource model, the state machine, the
restart lower bound and folding an observation into a Job.
"""

from ._version import __version__
from .fold import FoldSettings, JobRecord, Observation, Presence, fold
from .model import FailureReason, FlinkJobStatus, Job, JobState
from .restarts import Lags, RestartLedger, Sighting, observe
from .states import TRANSITIONS, IllegalTransition, route

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
