"""Harness that runs real Flink, ZooKeeper and Prometheus on loopback for the tests."""
