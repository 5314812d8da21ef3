"""The SQLite store, on real files: durability, refusal of files it cannot trust, ownership."""

from __future__ import annotations

import hashlib
import json
import os
import random
import selectors
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import pytest
from jobs import starting

from probe._core.record import JobRecord
from probe._core.restarts import RestartLedger
from probe._store import StoredJob, StoreError, migrations, open_store
from probe._store.migrations import SCHEMA_VERSION, Migration
from probe._store.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[3]
WRITER = REPO / "tests" / "support" / "store_writer.py"
WRITER_JOB_COUNT = 20  # store_writer.JOB_COUNT
KILL_RUNS = 50


def job(
    index: int, resource_version: int = 1, *, namespace: str = "default", **fields: object
) -> StoredJob:
    document = {"index": index, "resourceVersion": resource_version, **fields}
    return StoredJob(
        job_id=f"3f1da3c8-6f22-430f-9200-{index:012x}",
        namespace=namespace,
        state="STARTED",
        resource_version=resource_version,
        document=json.dumps(document, ensure_ascii=False),
        target="local",
        observed=0,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def counters(store: SQLiteStore) -> dict[str, int]:
    return {stored.job_id: json.loads(stored.document)["counter"] for stored in store.load()}


def with_counter(counter: int, count: int, padding: int = 0) -> list[StoredJob]:
    return [
        StoredJob(
            job_id=f"00000000-0000-4000-8000-{index:012d}",
            namespace="default",
            state="STARTED",
            resource_version=counter,
            document=json.dumps({"counter": counter, "padding": "x" * padding}),
            target="local",
            observed=0,
        )
        for index in range(count)
    ]


def quick_check(path: Path) -> list[str]:
    """quick_check as any reader sees the file, with the WAL a killed writer left beside it."""
    reader = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return [row[0] for row in reader.execute("PRAGMA quick_check")]
    finally:
        reader.close()


def writer_command(mode: str, path: Path) -> list[str]:
    return [sys.executable, str(WRITER), mode, str(path)]


def writer_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_writer(
    mode: str, path: Path, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), *writer_command(mode, path)],
        env=writer_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_refused(path: Path, message: str) -> None:
    with pytest.raises(StoreError) as refused:
        SQLiteStore.open(path)
    assert str(refused.value) == message


# --- round trip and write semantics -------------------------------------------------------


def test_every_job_written_is_loaded_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "flink-probe.db"
    written = [
        job(index, resource_version=index % 7 + 1, namespace=f"ns-{index % 3}", name=f"jöb-{index}")
        for index in range(2000)
    ]
    with SQLiteStore.open(path) as store:
        store.write_batch(written[:1000])
        store.write_batch(written[1000:])

    with SQLiteStore.open(path) as reopened:
        loaded = reopened.load()

    assert loaded == sorted(written, key=lambda stored: (stored.namespace, stored.job_id))


def test_a_missing_file_is_created_as_an_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "flink-probe.db"
    store = open_store(path)
    try:
        assert store.load() == []
    finally:
        store.close()
    assert path.is_file()


def test_an_empty_file_is_taken_as_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "flink-probe.db"
    # What a first start killed between creating the file and its first write leaves behind;
    # SQLite itself reads a 0-byte file as a database with nothing in it.
    path.touch()
    with SQLiteStore.open(path) as store:
        store.write_batch([job(1)])
    with SQLiteStore.open(path) as reopened:
        assert reopened.load() == [job(1)]


def test_the_file_is_in_wal_mode_and_commits_are_synced(tmp_path: Path) -> None:
    path = tmp_path / "flink-probe.db"
    with SQLiteStore.open(path) as store:
        # synchronous is a setting of the connection, visible only through it; FULL (2) is
        # what makes a returned write_batch survive a power loss.
        assert store._connection is not None
        assert store._connection.execute("PRAGMA synchronous").fetchone()[0] == 2
    reader = sqlite3.connect(path)
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reader.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    reader.close()


def test_a_row_is_replaced_only_by_a_higher_or_equal_resource_version(tmp_path: Path) -> None:
    with SQLiteStore.open(tmp_path / "flink-probe.db") as store:
        store.write_batch([job(1, resource_version=5, note="five"), job(2, resource_version=5)])

        store.write_batch([job(1, resource_version=4, note="stale"), job(2, resource_version=6)])
        assert store.load() == [job(1, resource_version=5, note="five"), job(2, resource_version=6)]

        store.write_batch([job(1, resource_version=5, note="five again")])
        assert store.load()[0] == job(1, resource_version=5, note="five again")

        # Within one batch too, a later stale copy does not undo an earlier newer one.
        store.write_batch([job(1, resource_version=9), job(1, resource_version=8)])
        assert store.load()[0] == job(1, resource_version=9)


def test_a_failing_batch_leaves_nothing_of_itself(tmp_path: Path) -> None:
    with SQLiteStore.open(tmp_path / "flink-probe.db") as store:
        store.write_batch([job(1), job(2)])
        broken = StoredJob(
            "3f1da3c8-6f22-430f-9200-000000000009",
            "default",
            "STARTED",
            1,
            cast(str, None),
            "local",
            0,
        )  # violates NOT NULL, after two good rows
        with pytest.raises(StoreError) as failed:
            store.write_batch([job(1, resource_version=2), job(3), broken])
        assert "NOT NULL constraint failed: jobs.document" in str(failed.value)
        assert store.load() == [job(1), job(2)]

        store.write_batch([job(1, resource_version=2), job(3)])  # the store is still usable
        assert store.load() == [job(1, resource_version=2), job(2), job(3)]


def test_batches_can_be_written_from_a_worker_thread(tmp_path: Path) -> None:
    with SQLiteStore.open(tmp_path / "flink-probe.db") as store, ThreadPoolExecutor(1) as worker:
        for version in range(1, 4):
            worker.submit(store.write_batch, [job(1, resource_version=version)]).result()
        assert store.load() == [job(1, resource_version=3)]


def test_a_closed_store_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "flink-probe.db"
    store = SQLiteStore.open(path)
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(StoreError, match=r"^state file .* is closed$"):
        store.write_batch([job(1)])


def test_a_migration_appended_to_the_list_upgrades_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "flink-probe.db"
    with SQLiteStore.open(path) as store:
        store.write_batch([job(1)])

    add_state_index = Migration(
        sqlite=("CREATE INDEX jobs_by_state ON jobs (state)",),
        postgres=("CREATE INDEX jobs_by_state ON jobs (state)",),
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, add_state_index))
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with SQLiteStore.open(path) as upgraded:
        assert upgraded.load() == [job(1)]

    reader = sqlite3.connect(path)
    assert reader.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert reader.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'jobs_by_state'"
    ).fetchall()
    reader.close()


def test_a_file_of_version_1_gains_each_jobs_target_and_count(tmp_path: Path) -> None:
    path = tmp_path / "flink-probe.db"
    record = JobRecord(starting().job, ledger=RestartLedger(observed=4))
    version_1 = sqlite3.connect(path)
    for statement in migrations.MIGRATIONS[0].sqlite:
        version_1.execute(statement)
    version_1.execute(
        "INSERT INTO jobs VALUES (?, 'default', 'STARTING', 1, ?)",
        (record.job.id, record.to_document()),
    )
    version_1.execute("PRAGMA user_version = 1")
    version_1.commit()
    version_1.close()

    with SQLiteStore.open(path) as store:
        (loaded,) = store.load(["prod"])

    assert (loaded.target, loaded.observed) == ("prod", 4)
    assert loaded.document == record.to_document()


# --- crash safety ---------------------------------------------------------------------------


class LineReader:
    """Lines of a child's stdout, each awaited with a deadline instead of blocking forever."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self._fd = process.stdout.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._buffer = b""
        self._eof = False

    def lines(self, deadline: float) -> Iterator[str]:
        """Complete lines as they come, until EOF; TimeoutError past ``deadline``."""
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                yield line.decode()
            if self._eof:
                return
            if not self._selector.select(timeout=max(0.0, deadline - time.monotonic())):
                raise TimeoutError("no output from the writer before the deadline")
            chunk = os.read(self._fd, 65536)
            self._eof = not chunk
            self._buffer += chunk

    def close(self) -> None:
        self._selector.close()


def committed(line: str) -> int:
    word, number = line.split()
    assert word == "committed", line
    return int(number)


@pytest.mark.slow
def test_every_batch_reported_committed_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "flink-probe.db"
    kill_delays = random.Random(20251128)  # seeded: a failure can be replayed
    for run in range(KILL_RUNS):
        with subprocess.Popen(
            writer_command("forever", path),
            env=writer_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as writer:
            reader = LineReader(writer)
            try:
                first = next(reader.lines(deadline=time.monotonic() + 30), None)
                assert first is not None, writer.communicate(timeout=30)[1].decode()
                last_reported = committed(first)
                # Not a wait for anything: the kill must land at a random point of the write
                # loop, mid-commit as often as between commits.
                time.sleep(kill_delays.uniform(0, 0.03))
                writer.kill()
                writer.wait(timeout=30)
                for line in reader.lines(deadline=time.monotonic() + 30):
                    last_reported = committed(line)
            finally:
                writer.kill()  # no-op once it is dead; Popen's exit reaps it and closes pipes
                reader.close()

        assert quick_check(path) == ["ok"], f"run {run}"
        with SQLiteStore.open(path) as store:  # also proves kill -9 released the lock
            stored = counters(store)
        assert len(stored) == WRITER_JOB_COUNT, f"run {run}"
        # All jobs from the same batch (a batch is atomic), none older than the last batch
        # reported committed, and at most the one batch committed but not yet reported.
        assert len(set(stored.values())) == 1, f"run {run}: {stored}"
        assert last_reported <= next(iter(stored.values())) <= last_reported + 1, f"run {run}"


# --- files that are refused, and left as they were -------------------------------------------


def test_a_file_of_a_newer_schema_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "flink-probe.db"
    with SQLiteStore.open(path) as store:
        store.write_batch([job(1)])
    newer = sqlite3.connect(path)
    newer.execute("PRAGMA user_version = 7")
    newer.close()
    before = digest(path)

    assert_refused(
        path,
        f"state file {path} has schema version 7, newer than this flink-probe supports"
        f" ({SCHEMA_VERSION}); upgrade flink-probe or use another state.path",
    )
    assert digest(path) == before


def truncated_database(path: Path) -> None:
    with SQLiteStore.open(path) as store:
        store.write_batch([job(index, padding="x" * 500) for index in range(500)])
    os.truncate(path, path.stat().st_size // 2)


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(64 * 1024))


@pytest.mark.parametrize(
    ("make_file", "reason"),
    [
        (random_bytes, "file is not a database (SQLITE_NOTADB)"),
        (truncated_database, "database disk image is malformed (SQLITE_CORRUPT)"),
    ],
)
def test_a_corrupt_file_is_refused_and_left_unchanged(
    tmp_path: Path, make_file: Callable[[Path], None], reason: str
) -> None:
    path = tmp_path / "flink-probe.db"
    make_file(path)
    before = digest(path)

    assert_refused(
        path,
        f"state file {path} is unreadable or corrupt ({reason}); it was left unchanged;"
        " restore it from a backup, move it aside, or use another state.path",
    )
    assert digest(path) == before


def test_a_database_of_another_program_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "flink-probe.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    other.commit()
    other.close()
    before = digest(path)

    assert_refused(
        path,
        f"state file {path} is a SQLite database of another program, not flink-probe's"
        " (application_id 0x0); it was left unchanged; use another state.path",
    )
    assert digest(path) == before


# --- paths that cannot hold the file ----------------------------------------------------------


def test_a_missing_directory_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert_refused(
        Path("missing/flink-probe.db"),
        f"state.path missing/flink-probe.db: directory {tmp_path / 'missing'} does not exist",
    )
    assert not (tmp_path / "missing").exists()


def test_a_file_where_the_directory_should_be_is_named(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a directory")
    path = tmp_path / "plain-file" / "flink-probe.db"
    assert_refused(path, f"state.path {path}: {tmp_path / 'plain-file'} is not a directory")


def test_a_directory_at_the_path_is_refused(tmp_path: Path) -> None:
    assert_refused(tmp_path, f"state.path {tmp_path} is a directory, not a file")


def without_dac_override() -> list[str]:
    """A prefix running a command without the capabilities that let root ignore file modes,
    or skip if that cannot be done here."""
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    if (
        shutil.which("setpriv") is None
        or subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode
    ):
        pytest.skip("running as root and setpriv cannot drop CAP_DAC_OVERRIDE")
    return [*prefix, "--"]


def test_a_directory_this_user_cannot_write_is_named(tmp_path: Path) -> None:
    """0555 on the directory. Root ignores modes through CAP_DAC_OVERRIDE, so as root the
    store runs in a child whose capability bounding set lacks it: then root, owner of the
    directory, gets the owner's r-x like anyone else (EACCES from the kernel itself)."""
    directory = tmp_path / "read-only"
    directory.mkdir(mode=0o555)
    path = directory / "flink-probe.db"
    expected = f"state.path {path}: directory {directory} is not writable (Permission denied)"
    try:
        if os.geteuid() == 0:
            opened = run_writer("open", path, prefix=without_dac_override())
            assert (opened.returncode, opened.stderr.strip()) == (2, expected)
        else:
            assert_refused(path, expected)
    finally:
        directory.chmod(0o755)
    assert list(directory.iterdir()) == []


def unshare_mount_namespace() -> list[str]:
    """A prefix running a command in a private mount namespace; skip if not allowed here, but
    fail under CI, which runs as root where mount namespaces are allowed."""
    prefix = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        prefix.append("--map-root-user")
    if (
        shutil.which("unshare") is None
        or subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode
    ):
        reason = "cannot create a mount namespace here"
        if os.environ.get("CI") == "true":
            pytest.fail(f"prerequisite missing in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return prefix


def test_a_read_only_file_system_is_named(tmp_path: Path) -> None:
    """A real EROFS: the directory bind-mounted read-only in a mount namespace of the child."""
    prefix = unshare_mount_namespace()
    path = tmp_path / "flink-probe.db"
    opened = run_writer(
        "open",
        path,
        prefix=[
            *prefix,
            "sh",
            "-c",
            f"mount --bind -o ro {shlex.quote(str(tmp_path))} {shlex.quote(str(tmp_path))}"
            ' && exec "$0" "$@"',
        ],
    )
    assert (opened.returncode, opened.stderr.strip()) == (
        2,
        f"state.path {path}: directory {tmp_path} is not writable (Read-only file system)",
    )


# --- ownership ------------------------------------------------------------------------------


def test_a_second_opener_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "flink-probe.db"
    in_use = f"state file {path} is in use by another flink-probe process (lock {path}.lock held)"
    first = SQLiteStore.open(path)
    assert_refused(path, in_use)
    first.close()
    with SQLiteStore.open(path) as second:
        assert second.load() == []


def test_another_process_is_refused_while_the_store_is_open(tmp_path: Path) -> None:
    path = tmp_path / "flink-probe.db"
    with SQLiteStore.open(path):
        refused = run_writer("open", path)
    assert (refused.returncode, refused.stderr.strip()) == (
        2,
        f"state file {path} is in use by another flink-probe process (lock {path}.lock held)",
    )
    allowed = run_writer("open", path)
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "opened")


# --- disk full at run time ------------------------------------------------------------------


def full_disk_error(path: Path) -> str:
    return f"writing 20 jobs to state file {path} failed: database or disk is full (SQLITE_FULL)"


def test_a_full_database_fails_the_batch_and_a_later_batch_succeeds(tmp_path: Path) -> None:
    """SQLite's max_page_count makes the database full for real (SQLITE_FULL from SQLite)."""
    path = tmp_path / "flink-probe.db"
    with SQLiteStore.open(path) as store:
        store.write_batch(with_counter(1, WRITER_JOB_COUNT))
        connection = store._connection  # the limit is a setting of the store's connection
        assert connection is not None
        page_count = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {page_count}")

        with pytest.raises(StoreError) as full:
            store.write_batch(with_counter(2, WRITER_JOB_COUNT, padding=10_000))
        assert str(full.value) == full_disk_error(path)
        assert set(counters(store).values()) == {1}

        connection.execute("PRAGMA max_page_count = 1073741823")
        store.write_batch(with_counter(3, WRITER_JOB_COUNT, padding=10_000))
        assert set(counters(store).values()) == {3}


def test_a_full_file_system_fails_the_batch_and_a_later_batch_succeeds(tmp_path: Path) -> None:
    """A real ENOSPC: a 1 MiB tmpfs in a mount namespace of the child, filled up by it."""
    prefix = unshare_mount_namespace()
    path = tmp_path / "flink-probe.db"
    filled = run_writer(
        "disk-full",
        path,
        prefix=[
            *prefix,
            "sh",
            "-c",
            f'mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(tmp_path))} && exec "$0" "$@"',
        ],
    )
    assert filled.returncode == 0, filled.stderr
    assert json.loads(filled.stdout) == {
        "error": full_disk_error(path),
        "counters_after_failure": [1],
        "counters_after_recovery": [3],
    }
