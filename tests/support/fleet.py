"""Daemons sharing one PostgreSQL store, as `flink-probe run` subprocesses, seen from outside.

- `Fleet`: starts replicas (each its own directory, instance name and port) on one database;
  a context manager that kills every replica (stopped ones too) on the way out.
- `Replica`: one of them: its leases and counts through its API and `/metrics`, its JSON log,
  and the signals a scenario sends it (kill -9, SIGSTOP, SIGCONT, SIGTERM).
- `Samples`: reads one Job's exposed count through every replica, in a thread, to check that
  no source ever shows it going down.
- `writes_by`: counts the rows of `jobs` each instance writes (a trigger in the database).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self

from daemon_harness import DaemonProcess, Metrics, daemon_config, restarts_of, wait_until_sync
from postgres_cluster import Database, PostgresCluster

WAIT = 30.0
"""Deadline of a wait; only reached when a test fails."""


@dataclass
class Replica:
    """One daemon of the fleet, as a subprocess."""

    name: str
    process: DaemonProcess
    directory: Path
    """Its own files (configuration, log): the replica's disk."""

    def metrics(self) -> Metrics:
        return self.process.client.metrics()

    def holds(self, target_name: str) -> bool:
        return self.metrics().value("flink_probe_target_lease", target=target_name) == 1.0

    def held(self) -> int:
        return int(self.metrics().total("flink_probe_target_lease"))

    def takeovers(self) -> float | None:
        return self.metrics().value("flink_probe_lease_takeovers_total")

    def exported_restarts(self, job_id: str) -> float | None:
        return self.metrics().value("flink_probe_job_restarts_total", job_id=job_id)

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The Job as its API serves it (committed data, from the store); None for a 404."""
        return self.process.client.job(job_id)

    def served_restarts(self, job_id: str) -> int | None:
        return restarts_of(self.job(job_id))

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.process.stderr.splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines

    def logged_at(self, event: str) -> list[float]:
        """When each log line `event` was written (Unix time)."""
        return [
            datetime.fromisoformat(line["timestamp"]).timestamp()
            for line in self.log_lines()
            if line.get("event") == event
        ]

    def kill9(self) -> None:
        """SIGKILL, and reap it: it commits and releases nothing."""
        self.process.kill()

    def pause(self) -> None:
        self.process.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.process.send_signal(signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM; it must exit 0 (having released its leases)."""
        assert self.process.terminate() == 0, self.process.stderr


@dataclass
class Fleet:
    """Starts replicas on one database, probing every `interval` seconds with leases of
    `lease_ttl`; every replica is killed when the block ends."""

    directory: Path
    database: Database
    interval: float
    lease_ttl: float
    timeout: float = 0.3
    """A Flink request's timeout."""
    replicas: list[Replica] = field(default_factory=list)

    def config(
        self,
        instance: str,
        targets: Sequence[Mapping[str, object]],
        settings: Mapping[str, object] | None = None,
        **state: object,
    ) -> dict[str, Any]:
        """A replica's configuration: `targets`, other top-level keys from `settings`, and the
        `state` keys over the fleet's."""
        password_file = self.directory / "db-password"
        password_file.write_text(self.database.password)
        config = daemon_config(
            self.directory / f"{instance}.db",
            targets,
            interval=f"{self.interval}s",
            timeout=f"{self.timeout}s",
        )
        config["state"] = {
            "url": self.database.url,
            "password_file": str(password_file),
            "instance": instance,
            "lease_ttl": f"{self.lease_ttl}s",
            "max_clock_skew": "50ms",
            **state,
        }
        return {**config, **(settings or {})}

    def start(
        self,
        instance: str,
        targets: Sequence[Mapping[str, object]],
        settings: Mapping[str, object] | None = None,
        **state: object,
    ) -> Replica:
        """Start a replica in a new directory of its own and wait until it answers."""
        directory = self.directory / instance
        directory.mkdir()
        process = DaemonProcess(
            self.config(instance, targets, settings, **state), directory / "flink-probe.yaml"
        )
        replica = Replica(instance, process, directory)
        self.replicas.append(replica)
        process.wait_healthy()
        return replica

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for replica in self.replicas:
            replica.kill9()  # SIGKILL ends a stopped process too


class Samples:
    """Reads every replica's exposed count of one Job over and over, in a thread, and keeps
    each source's readings (a replica's API, a replica's /metrics) in order."""

    def __init__(self, replicas: Sequence[Replica], job_id: str, every: float = 0.02) -> None:
        self.readings: dict[str, list[float]] = {}
        self._replicas = replicas
        self._job_id = job_id
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for replica in self._replicas:
                self._read(f"{replica.name} api", replica.served_restarts)
                self._read(f"{replica.name} metrics", replica.exported_restarts)
            self._stop.wait(self._every)

    def _read(self, source: str, read: Callable[[str], float | None]) -> None:
        try:
            value = read(self._job_id)
        except (OSError, AssertionError):
            return  # a replica killed, stopped, not yet listening, or its store down
        if value is not None:
            self.readings.setdefault(source, []).append(value)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def assert_never_down(self) -> None:
        for source, values in self.readings.items():
            drops = [(a, b) for a, b in itertools.pairwise(values) if b < a]
            assert drops == [], f"{source} went down: {drops}"


def count_reached(replica: Replica, job_id: str, count: int, *, within: float = WAIT) -> int:
    """Wait until `replica` exports `count` restarts of the Job; returns it."""
    wait_until_sync(
        lambda: replica.exported_restarts(job_id) == count,
        f"{replica.name} to export {count} restarts",
        within,
    )
    return count


def writes_by(cluster: PostgresCluster, database: Database) -> Callable[[str], int]:
    """Counts the rows each instance writes from now on (a trigger records the writer's
    application_name, which names its instance)."""
    with cluster.admin(database.name) as admin:
        admin.execute("CREATE TABLE job_writes (writer text NOT NULL)")
        admin.execute("GRANT INSERT ON job_writes TO PUBLIC")
        admin.execute(
            "CREATE FUNCTION record_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " INSERT INTO job_writes VALUES (current_setting('application_name'));"
            " RETURN NEW; END $$"
        )
        admin.execute(
            "CREATE TRIGGER record_writes AFTER INSERT OR UPDATE ON jobs"
            " FOR EACH ROW EXECUTE FUNCTION record_write()"
        )

    def count(instance: str) -> int:
        with cluster.admin(database.name) as admin:
            row = admin.execute(
                "SELECT count(*) FROM job_writes WHERE writer = %s", (f"flink-probe {instance}",)
            ).fetchone()
        assert row is not None
        assert isinstance(row[0], int)
        return row[0]

    return count
