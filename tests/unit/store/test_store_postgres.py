"""The PostgreSQL store against a real server: round trips, atomicity, schema, faults, errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import pytest
from postgres_cluster import ROLE_PASSWORD, Database, PostgresCluster

from probe._store import Lease, StoredJob, StoreError, open_store
from probe._store.migrations import SCHEMA_VERSION
from probe._store.postgres import PostgresStore
from probe._store.sqlite import SQLiteStore

DEADLINE_SECONDS = 20.0


def job(
    index: int,
    resource_version: int = 1,
    *,
    target: str = "orders",
    observed: int = 0,
    namespace: str = "default",
    note: str = "",
) -> StoredJob:
    document = {"index": index, "resourceVersion": resource_version, "note": note}
    return StoredJob(
        job_id=f"3f1da3c8-6f22-430f-9200-{index:012x}",
        namespace=namespace,
        state="STARTED",
        resource_version=resource_version,
        document=json.dumps(document, ensure_ascii=False),
        target=target,
        observed=observed,
    )


def by_key(jobs: list[StoredJob]) -> list[StoredJob]:
    return sorted(jobs, key=lambda stored: (stored.namespace, stored.job_id))


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def backend_waiting_on_a_lock(cluster: PostgresCluster, database: str, instance: str) -> bool:
    with cluster.admin() as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            " AND application_name = %s AND wait_event_type = 'Lock'",
            (database, f"flink-probe {instance}"),
        ).fetchone()
    return row is not None and row[0] == 1


# --- round trip and write semantics -------------------------------------------------------


def test_every_job_written_is_loaded_by_another_store(
    open_pg: Callable[[str], PostgresStore],
) -> None:
    written = [
        job(
            index,
            resource_version=index % 7 + 1,
            target=f"cluster-{index % 4}",
            observed=index % 5,
            namespace=f"ns-{index % 3}",
            note=f"jöb-{index}",
        )
        for index in range(2000)
    ]
    writer = open_pg("a")
    writer.write_batch(written[:1000])
    writer.write_batch(written[1000:])

    reader = open_pg("b")
    assert reader.load() == by_key(written)
    assert reader.load({"cluster-1", "cluster-3"}) == by_key(
        [stored for stored in written if stored.target in ("cluster-1", "cluster-3")]
    )
    assert reader.load(()) == []


def test_a_failing_batch_leaves_nothing_of_itself(open_pg: Callable[[str], PostgresStore]) -> None:
    store = open_pg("a")
    store.write_batch([job(1), job(2)])
    broken = StoredJob(
        "3f1da3c8-6f22-430f-9200-000000000009", "default", "STARTED", 1, cast(str, None), "x", 0
    )  # violates NOT NULL, after two good rows
    with pytest.raises(StoreError) as failed:
        store.write_batch([job(1, resource_version=2), job(3), broken])
    assert str(failed.value).startswith("writing 3 jobs to state.url postgresql://")
    assert 'null value in column "document"' in str(failed.value)
    assert "\n" not in str(failed.value)
    assert store.load() == [job(1), job(2)]

    store.write_batch([job(1, resource_version=2), job(3)])  # the store is still usable
    assert store.load() == [job(1, resource_version=2), job(2), job(3)]


def test_a_row_never_goes_back_in_resource_version_or_observed_count(
    open_pg: Callable[[str], PostgresStore],
) -> None:
    store = open_pg("a")
    store.write_batch([job(1, resource_version=5, observed=3, note="five")])

    store.write_batch([job(1, resource_version=4, observed=3, note="older")])
    store.write_batch([job(1, resource_version=6, observed=2, note="fewer restarts")])
    assert store.load() == [job(1, resource_version=5, observed=3, note="five")]

    store.write_batch([job(1, resource_version=6, observed=4, note="six")])
    assert store.load() == [job(1, resource_version=6, observed=4, note="six")]


def test_commits_are_synchronous_whatever_the_database_default(
    postgres_cluster: PostgresCluster, postgres_database: Database
) -> None:
    with postgres_cluster.admin() as admin:
        admin.execute(f"ALTER DATABASE {postgres_database.name} SET synchronous_commit = off")
    # A setting of the session, visible only through the store's own connection.
    with (
        PostgresStore.open(
            postgres_database.url, instance="a", password=postgres_database.password
        ) as store,
        store._connections.connection() as connection,
    ):
        setting = connection.execute("SHOW synchronous_commit").fetchone()
    assert setting == ("on",)


# --- schema -------------------------------------------------------------------------------


def test_instances_starting_together_migrate_once(postgres_database: Database) -> None:
    starting = 8
    barrier = threading.Barrier(starting)

    def start(index: int) -> PostgresStore:
        barrier.wait(timeout=DEADLINE_SECONDS)
        return PostgresStore.open(
            postgres_database.url, instance=f"i{index}", password=postgres_database.password
        )

    with ThreadPoolExecutor(starting) as pool:
        stores = list(pool.map(start, range(starting)))
    try:
        stores[0].write_batch([job(1)])
        assert all(store.load() == [job(1)] for store in stores)
        with stores[0]._connections.connection() as connection:
            versions = connection.execute("SELECT version FROM flink_probe_schema").fetchall()
        assert versions == [(SCHEMA_VERSION,)]
    finally:
        for store in stores:
            store.close()


def test_a_database_of_a_newer_schema_is_refused_and_left_unchanged(
    postgres_cluster: PostgresCluster, postgres_database: Database
) -> None:
    with PostgresStore.open(
        postgres_database.url, instance="a", password=postgres_database.password
    ) as store:
        store.write_batch([job(1)])
    with postgres_cluster.admin(postgres_database.name) as admin:
        admin.execute("UPDATE flink_probe_schema SET version = 99")

    with pytest.raises(StoreError) as refused:
        PostgresStore.open(postgres_database.url, instance="b", password=postgres_database.password)

    assert str(refused.value) == (
        f"state.url {postgres_database.url}: schema version 99 is newer than this flink-probe"
        f" understands ({SCHEMA_VERSION}); upgrade flink-probe"
    )
    with postgres_cluster.admin(postgres_database.name) as admin:
        assert admin.execute("SELECT version FROM flink_probe_schema").fetchall() == [(99,)]
        assert admin.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


# --- faults while running -----------------------------------------------------------------


def test_a_server_restart_fails_writes_until_it_is_back_without_reopening(
    postgres_cluster: PostgresCluster, open_pg: Callable[[str], PostgresStore]
) -> None:
    store = open_pg("a")
    store.write_batch([job(1)])
    leases = store.claim({"orders"}, ttl=60)
    postgres_cluster.stop()
    postgres_cluster.start()
    # The connections the restart ended while idle are noticed and replaced: no call fails.
    store.write_batch([job(1, resource_version=2)], {"orders": leases[0].token})

    postgres_cluster.stop()
    with pytest.raises(StoreError) as failed:
        store.write_batch([job(1, resource_version=3)])
    message = str(failed.value)
    assert message.startswith("writing 1 jobs to state.url postgresql://")
    assert "\n" not in message
    with pytest.raises(StoreError):
        store.claim({"orders"}, ttl=60)

    postgres_cluster.start()
    store.write_batch([job(1, resource_version=3)], {"orders": leases[0].token})
    assert store.claim({"orders"}, ttl=60) == (
        Lease("orders", leases[0].token, 60, renewed=True, taken_over=False),
    )
    assert store.load() == [job(1, resource_version=3)]


def test_a_connection_dropped_mid_transaction_fails_only_that_write(
    postgres_cluster: PostgresCluster,
    postgres_database: Database,
    open_pg: Callable[[str], PostgresStore],
) -> None:
    store = open_pg("a")
    store.write_batch([job(1)])
    failure: list[BaseException] = []

    def write() -> None:
        try:
            store.write_batch([job(1, resource_version=2), job(2)])
        except BaseException as exc:
            failure.append(exc)

    with postgres_cluster.admin(postgres_database.name) as admin, admin.transaction():
        admin.execute(
            "LOCK TABLE jobs IN EXCLUSIVE MODE"
        )  # the write blocks inside its transaction
        writer = threading.Thread(target=write)
        writer.start()
        wait_for(
            lambda: backend_waiting_on_a_lock(postgres_cluster, postgres_database.name, "a"),
            "the write to wait on the lock",
        )
        with postgres_cluster.admin() as killer:
            killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'flink-probe a' AND wait_event_type = 'Lock'"
            )
        writer.join(DEADLINE_SECONDS)

    assert len(failure) == 1
    assert isinstance(failure[0], StoreError)
    assert str(failure[0]).startswith("writing 2 jobs to state.url postgresql://")
    assert "\n" not in str(failure[0])
    assert store.load() == [job(1)]
    store.write_batch([job(1, resource_version=2), job(2)])
    assert store.load() == [job(1, resource_version=2), job(2)]


# --- refused at start, in one line --------------------------------------------------------


def open_failure(url: str, password: str | None = None) -> str:
    with pytest.raises(StoreError) as refused:
        PostgresStore.open(url, instance="a", password=password)
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_a_wrong_password_is_refused_in_one_line(
    postgres_cluster: PostgresCluster, postgres_database: Database
) -> None:
    postgres_cluster.create_role("mallory", "right")
    url = postgres_cluster.url(postgres_database.name, user="mallory")

    message = open_failure(url, password="wrong")

    assert message.startswith(f"state.url {url}: connection failed: ")
    assert 'password authentication failed for user "mallory"' in message


def test_a_missing_database_is_refused_in_one_line(postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.url("no_such_database")

    message = open_failure(url, password=ROLE_PASSWORD)

    assert message.startswith(f"state.url {url}: connection failed: ")
    assert 'database "no_such_database" does not exist' in message


def test_an_unreachable_server_is_refused_in_one_line(postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.url("postgres", port=1)

    message = open_failure(url, password=ROLE_PASSWORD)

    assert message.startswith(f"state.url {url}: connection failed: ")
    assert "Connection refused" in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://probe:secret@127.0.0.1:5432/flink",
        "postgresql://probe@127.0.0.1:5432/flink?password=secret",
    ],
)
def test_a_password_in_the_url_is_refused_without_showing_it(url: str) -> None:
    message = open_failure(url)

    assert message == (
        "state.url: put the password in state.password_file or state.password_env, not in the URL"
    )


def test_libpq_finds_the_password_in_pgpassfile(
    postgres_database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(
        f"127.0.0.1:*:{postgres_database.name}:probe:{postgres_database.password}\n"
    )
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))

    with PostgresStore.open(postgres_database.url, instance="a") as store:
        store.write_batch([job(1)])
        assert store.load() == [job(1)]


# --- choosing the backend -----------------------------------------------------------------


def test_open_store_chooses_the_backend_by_the_location(
    postgres_database: Database, tmp_path: Path
) -> None:
    stores = [
        open_store(postgres_database.url, password=postgres_database.password, instance="a"),
        open_store(f"sqlite://{tmp_path}/url.db"),
        open_store(str(tmp_path / "plain.db")),
        open_store(tmp_path / "path.db"),
    ]
    try:
        assert [type(store) for store in stores] == [PostgresStore] + [SQLiteStore] * 3
        assert {path.name for path in tmp_path.glob("*.db")} == {"url.db", "plain.db", "path.db"}
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize(
    ("location", "message"),
    [
        (
            "mysql://probe@db/flink",
            "state.url mysql://probe@db/flink: unknown scheme 'mysql'; use sqlite:///path"
            " or postgresql://user@host:port/dbname",
        ),
        (
            "sqlite://host/state.db",
            "state.url sqlite://host/state.db: write a SQLite file as sqlite:///path",
        ),
    ],
)
def test_open_store_refuses_what_it_cannot_open(location: str, message: str) -> None:
    with pytest.raises(StoreError) as refused:
        open_store(location)
    assert str(refused.value) == message
