"""SIGHUP, end to end: `flink-probe run` in a subprocess, its file rewritten, a real signal.

What an operator relies on: targets and Jobs join and leave, a broken file changes nothing,
every changed setting is either applied (and takes effect) or logged as needing a restart, and
a longer interval does not make /healthz call the loop stalled between rounds.
"""

from __future__ import annotations

import json
import signal
import threading
import urllib.error
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import (
    DaemonProcess,
    ProbeClient,
    daemon_config,
    dashed,
    flink_status_of,
    free_port,
    static_job,
    target,
    wait_for_sync,
    wait_until_sync,
    write_config,
)

from probe.testing import Endpoint, FakeCluster, Fault, FaultKind, serve_in_thread

KEPT = "0a0a0a0a0a0a4a0a8a0a0a0a0a0a0a0a"
DROPPED = "0b0b0b0b0b0b4b0b8b0b0b0b0b0b0b0b"
FOUND = "0c0c0c0c0c0c4c0c8c0c0c0c0c0c0c0c"
RELOADED = "configuration reloaded"
REFUSED = "configuration refused; keeping the running one"


def log_entries(daemon: DaemonProcess) -> list[dict[str, Any]]:
    """The daemon's JSON log lines so far (a line still being written is left out)."""
    lines = daemon.stderr.split("\n")[:-1]
    return [json.loads(line) for line in lines if line.startswith("{")]


def events(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    return [entry for entry in log_entries(daemon) if entry["event"] == event]


def reload(
    daemon: DaemonProcess, config: Mapping[str, Any] | str, ends_with: str = RELOADED
) -> dict[str, Any]:
    """Rewrite the daemon's file with `config` (or raw text), send SIGHUP, and return the log
    entry that ends the reload."""
    before = len(events(daemon, ends_with))
    if isinstance(config, str):
        daemon.config_file.write_text(config, encoding="utf-8")
    else:
        write_config(daemon.config_file, config)
    daemon.process.send_signal(signal.SIGHUP)
    ended = wait_for_sync(
        lambda: events(daemon, ends_with), lambda found: len(found) > before, repr(ends_with)
    )
    return ended[-1]


def reload_lines(daemon: DaemonProcess) -> dict[str, str]:
    """The per-setting lines of reloads so far: event -> level."""
    return {
        entry["event"]: entry["level"]
        for entry in log_entries(daemon)
        if entry["event"].startswith("reload: ")
    }


def rounds(cluster: FakeCluster) -> int:
    return cluster.requests(Endpoint.OVERVIEW)


def wait_rounds(cluster: FakeCluster, count: int) -> None:
    """Until `count` more rounds asked `cluster` for its overview."""
    until = rounds(cluster) + count
    wait_until_sync(lambda: rounds(cluster) >= until, f"{count} more rounds")


def job_of(client: ProbeClient, jid: str) -> dict[str, Any]:
    job = client.job(dashed(jid))
    assert job is not None, f"job {dashed(jid)} not found"
    return job


def last_update(job: Mapping[str, Any]) -> object:
    return job["status"]["started"]["lastUpdateTime"]


def wait_updates(client: ProbeClient, jid: str, count: int) -> None:
    """Until the Job was probed `count` more times (its lastUpdateTime moved)."""
    seen = [last_update(job_of(client, jid))]

    def moved_enough() -> bool:
        now = last_update(job_of(client, jid))
        if now != seen[-1]:
            seen.append(now)
        return len(seen) > count

    wait_until_sync(moved_enough, f"{count} more probes of {jid}")


def target_up(client: ProbeClient, name: str) -> float | None:
    return client.metrics().value("flink_probe_target_up", target=name)


def test_targets_and_jobs_join_and_leave(tmp_path: Path) -> None:
    first, second = FakeCluster(), FakeCluster()
    first.submit("kept", KEPT)
    first.submit("dropped", DROPPED)
    second.submit("found", FOUND)
    with serve_in_thread(first) as one, serve_in_thread(second) as two:
        config = daemon_config(
            tmp_path / "state.db",
            [target("one", one.url, discover=False)],
            [static_job(dashed(KEPT), "one", "kept"), static_job(dashed(DROPPED), "one", "drop")],
        )
        with DaemonProcess(config, tmp_path / "daemon.yaml") as daemon:
            client = daemon.client
            daemon.wait_healthy()
            wait_until_sync(
                lambda: all(
                    flink_status_of(client.job(dashed(jid))) == "RUNNING" for jid in (KEPT, DROPPED)
                ),
                "both declared Jobs probed",
            )

            # Target "two" (discovering) joins; Job "dropped" leaves, its target stays.
            config["targets"].append(target("two", two.url))
            config["jobs"] = config["jobs"][:1]
            reload(daemon, config)
            wait_for_sync(
                lambda: client.job(dashed(FOUND)),
                lambda job: flink_status_of(job) == "RUNNING",
                "the joining target's job discovered",
            )
            assert target_up(client, "two") == 1
            # A round that began before the reload may still probe "dropped" once.
            wait_updates(client, KEPT, 2)
            left = job_of(client, DROPPED)
            wait_updates(client, KEPT, 2)
            assert job_of(client, DROPPED) == left, "a Job no longer declared was probed"

            # Target "two" leaves: its Jobs stay as history, its cluster is asked nothing more.
            config["targets"] = config["targets"][:1]
            reload(daemon, config)
            asked = second.requests()
            wait_rounds(first, 3)
            assert second.requests() == asked
            assert target_up(client, "two") is None
            assert flink_status_of(client.job(dashed(FOUND))) == "RUNNING"
            assert daemon.terminate() == 0, daemon.stderr


def test_a_refused_configuration_keeps_the_running_one(tmp_path: Path) -> None:
    cluster = FakeCluster()
    cluster.submit("kept", KEPT)
    with serve_in_thread(cluster) as flink:
        config = daemon_config(tmp_path / "state.db", [target("one", flink.url)])
        with DaemonProcess(config, tmp_path / "daemon.yaml") as daemon:
            daemon.wait_healthy()
            broken_yaml = "targets: [\n"
            # Valid YAML, but no configuration: were it applied, target "one" would leave.
            invalid = {**config, "targets": [], "probe": {"interval": "often"}}
            for refused in (broken_yaml, invalid):
                entry = reload(daemon, refused, ends_with=REFUSED)
                assert entry["level"] == "error"
                wait_rounds(cluster, 3)
                assert daemon.client.healthz() == 200
            [yaml_error, value_error] = events(daemon, REFUSED)
            assert [line.split(":")[0] for line in yaml_error["errors"]] == [
                f"config file {daemon.config_file}"
            ]
            assert value_error["errors"] == [
                "probe.interval: invalid duration 'often':"
                " use e.g. 500ms, 1.5s, 10s, 5m, 1h, 30d, or a number of seconds"
            ]
            # One line each (no traceback), and nothing was applied in between.
            entries = log_entries(daemon)
            assert len(entries) == len(daemon.stderr.splitlines())
            assert [e["event"] for e in entries if e["level"] == "error"] == [REFUSED, REFUSED]
            assert events(daemon, RELOADED) == []
            assert target_up(daemon.client, "one") == 1
            assert daemon.terminate() == 0, daemon.stderr


def test_a_longer_interval_keeps_healthz_ok_between_rounds(tmp_path: Path) -> None:
    """/healthz calls the loop stalled after 5 silent intervals: those of the interval the
    loop runs at now, not of the one it started with. (The systemd watchdog pings only while
    `Liveness.stalled` is false, the same answer /healthz gives.)"""
    cluster = FakeCluster()
    cluster.submit("kept", KEPT)
    with serve_in_thread(cluster) as flink:
        config = daemon_config(
            tmp_path / "state.db", [target("one", flink.url)], interval="100ms", timeout="100ms"
        )
        with DaemonProcess(config, tmp_path / "daemon.yaml") as daemon:
            daemon.wait_healthy()
            # Silent 2 s between rounds: ten of the old intervals, two fifths of the new limit.
            config["probe"]["interval"] = "2s"
            reload(daemon, config)
            answers: list[int] = []
            until = rounds(cluster) + 3

            def watched_three_rounds() -> bool:
                answers.append(daemon.client.healthz())
                return rounds(cluster) >= until

            wait_until_sync(watched_three_rounds, "3 rounds at the new interval")
            assert set(answers) == {200}, f"{answers.count(503)} of {len(answers)} were 503"
            assert daemon.terminate() == 0, daemon.stderr


def test_each_changed_setting_is_applied_or_needs_a_restart(tmp_path: Path) -> None:
    """`server` and `state` keep their running values (a warning says so); the others apply:
    here a shorter `probe.metrics_retention` takes a finished Job out of /metrics."""
    cluster = FakeCluster()
    cluster.submit("done", KEPT)
    cluster.finish(KEPT)
    state = tmp_path / "state.db"
    with serve_in_thread(cluster) as flink:
        config = daemon_config(state, [target("one", flink.url)], metrics_retention="1h")
        with DaemonProcess(config, tmp_path / "daemon.yaml") as daemon:
            client = daemon.client
            daemon.wait_healthy()
            wait_until_sync(
                lambda: client.metrics().value("flink_probe_job_state", state="FINISHED") == 1,
                "the finished Job in /metrics",
            )
            elsewhere = free_port()
            changed = {
                **config,
                "server": {"listen": f"127.0.0.1:{elsewhere}"},
                "state": {"path": str(tmp_path / "other.db")},
                "probe": {**config["probe"], "metrics_retention": "1ms", "concurrency": 3},
            }
            reload(daemon, changed)
            assert reload_lines(daemon) == {
                "reload: server.listen changed; needs a restart": "warning",
                "reload: state.path changed; needs a restart": "warning",
                "reload: probe.metrics_retention changed; applied": "info",
                "reload: probe.concurrency changed; applied": "info",
            }
            wait_until_sync(
                lambda: not client.metrics().series("flink_probe_job_state"),
                "the finished Job out of /metrics",
            )
            assert client.job(dashed(KEPT)) is not None
            assert client.healthz() == 200
            with pytest.raises(urllib.error.URLError) as refused:
                ProbeClient(f"http://127.0.0.1:{elsewhere}").healthz()
            assert isinstance(refused.value.reason, ConnectionRefusedError)
            assert not (tmp_path / "other.db").exists()
            assert daemon.terminate() == 0, daemon.stderr


def test_a_new_logging_level_and_format_take_effect(tmp_path: Path) -> None:
    cluster = FakeCluster()
    with serve_in_thread(cluster) as flink:
        config = daemon_config(tmp_path / "state.db", [target("one", flink.url)])
        with DaemonProcess(config, tmp_path / "daemon.yaml") as daemon:
            daemon.wait_healthy()
            assert all(entry["level"] != "debug" for entry in log_entries(daemon))
            config["logging"] = {"level": "debug", "format": "console"}
            write_config(daemon.config_file, config)
            daemon.process.send_signal(signal.SIGHUP)

            def console_lines() -> list[str]:
                return [line for line in daemon.stderr.split("\n") if not line.startswith("{")]

            wait_until_sync(
                lambda: any("[debug" in line for line in console_lines()),
                "a debug line in console format",
            )
            text = "\n".join(console_lines())
            assert "reload: logging.level changed; applied" in text
            assert "reload: logging.format changed; applied" in text
            assert daemon.terminate() == 0, daemon.stderr


class InFlightCluster(FakeCluster):
    """Counts the metrics requests in flight: a SLOW fault holds each open before it answers."""

    def __init__(self) -> None:
        super().__init__()
        self._counting = threading.Lock()
        self.in_flight = 0
        self.most = 0
        """The most metrics requests in flight at once since `reset_most`."""

    def reset_most(self) -> None:
        with self._counting:
            self.most = self.in_flight

    def note_request(self, endpoint: Endpoint, jid: str | None) -> tuple[Fault | None, bool]:
        if endpoint is Endpoint.METRICS:
            with self._counting:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
        return super().note_request(endpoint, jid)

    def answer(self, endpoint: Endpoint, jid: str | None, query: Mapping[str, str]) -> Any:
        if endpoint is Endpoint.METRICS:
            with self._counting:
                self.in_flight -= 1
        return super().answer(endpoint, jid, query)


@pytest.mark.parametrize("key", ["concurrency", "per_target_concurrency"])
def test_new_connection_limits_apply_to_the_next_rounds(tmp_path: Path, key: str) -> None:
    """One request at a time while `key` is 1 (the other allows 4); 4 at once once a reload
    raised it."""
    cluster = InFlightCluster()
    jids = [f"{index:032x}" for index in range(1, 5)]
    for jid in jids:
        cluster.submit(jid, jid)
    cluster.set_fault(Endpoint.METRICS, Fault(FaultKind.SLOW, seconds=0.2))
    with serve_in_thread(cluster) as flink:
        config = daemon_config(
            tmp_path / "state.db",
            [target("one", flink.url)],
            interval="1s",
            timeout="1s",
            metrics_refresh="0s",  # every Job's numRestarts every round
        )
        config["probe"] |= {"concurrency": 4, "per_target_concurrency": 4, key: 1}
        with DaemonProcess(config, tmp_path / "daemon.yaml") as daemon:
            daemon.wait_healthy()
            wait_until_sync(
                # The first round reads one count, the next every Job's.
                lambda: cluster.requests(Endpoint.METRICS) >= 1 + len(jids),
                "a round that read every Job's numRestarts",
            )
            assert cluster.most == 1
            config["probe"][key] = 4
            reload(daemon, config)
            cluster.reset_most()
            wait_until_sync(lambda: cluster.most == 4, f"4 requests in flight, with {key}: 4")
            assert reload_lines(daemon) == {f"reload: probe.{key} changed; applied": "info"}
            assert daemon.terminate() == 0, daemon.stderr
