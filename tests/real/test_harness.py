"""The harness's clusters run with the configuration it wrote.

The Flink facts the harness relies on (each test-job mode's outcome, numRestarts growing and
restarting from 0 after an HA failover, a JobManager killed without HA coming back without its
jobs) are asserted on the Flink side by the daemon scenarios that use them
(test_scenarios.py, test_ha_failover.py), so they are not checked a second time here.
"""

from __future__ import annotations

import pytest

from .testjob import FlinkWithTestJob

pytestmark = [pytest.mark.realflink, pytest.mark.slow]


def test_jobmanager_runs_with_the_written_config(flink: FlinkWithTestJob) -> None:
    config = flink.cluster.jobmanager_config()

    assert config["rest.address"] == "127.0.0.1"
    assert config["taskmanager.numberOfTaskSlots"] == "8"
    # The daemon scenarios set the target's lags (E = 1 s, M = 2 s) from these two.
    assert config["metrics.fetcher.update-interval"] == "1000"
    assert config["web.refresh-interval"] == "1000"
    assert flink.cluster.get_json("/overview")["flink-version"] == flink.cluster.version
