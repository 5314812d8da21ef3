"""A separate process that uses the store, for tests that need one (crash, lock, disk full).

    store_writer.py forever PATH      write batches until killed, going on from the stored
                                      counter; after each write_batch returns, print
                                      "committed <n>" (n = the counter in that batch)
    store_writer.py open PATH         open the store, print "opened", close it
    store_writer.py disk-full PATH    with PATH on a nearly full small file system: fill it,
                                      show a batch fails, free space, show the next succeeds

A StoreError is printed on stderr as its one line, with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
from pathlib import Path

from probe._store import StoredJob, StoreError
from probe._store.sqlite import SQLiteStore

JOB_COUNT = 20


def job_id(index: int) -> str:
    return f"00000000-0000-4000-8000-{index:012d}"


def batch(counter: int, padding: int = 0) -> list[StoredJob]:
    """Every job at resource_version ``counter``, with ``counter`` inside its document."""
    return [
        StoredJob(
            job_id=job_id(index),
            namespace="default",
            state="STARTED",
            resource_version=counter,
            document=json.dumps({"counter": counter, "padding": "x" * padding}),
            target="local",
            observed=0,
        )
        for index in range(JOB_COUNT)
    ]


def write_forever(path: Path) -> None:
    store = SQLiteStore.open(path)
    # Go on from what a killed predecessor stored, as the daemon does after a restart.
    start = max((job.resource_version for job in store.load()), default=0) + 1
    for counter in itertools.count(start):
        store.write_batch(batch(counter))
        print(f"committed {counter}", flush=True)


def open_once(path: Path) -> None:
    with SQLiteStore.open(path):
        print("opened", flush=True)


def disk_full(path: Path) -> None:
    """Print one JSON object: the error of the batch that hit the full disk, and the
    counters stored after that failure and after a batch written once space was freed."""
    filler = path.with_name("filler")
    with SQLiteStore.open(path) as store:
        store.write_batch(batch(1))
        with filler.open("wb") as fill, contextlib.suppress(OSError):
            while True:  # until ENOSPC: the file system is now full
                fill.write(b"\0" * 65536)
                fill.flush()
        try:
            store.write_batch(batch(2, padding=20_000))
        except StoreError as exc:
            error = str(exc)
        else:
            error = ""
        after_failure = counters(store)
        filler.unlink()
        store.write_batch(batch(3, padding=20_000))
    with SQLiteStore.open(path) as reopened:
        after_recovery = counters(reopened)
    report = {
        "error": error,
        "counters_after_failure": after_failure,
        "counters_after_recovery": after_recovery,
    }
    print(json.dumps(report), flush=True)


def counters(store: SQLiteStore) -> list[int]:
    return sorted({json.loads(job.document)["counter"] for job in store.load()})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["forever", "open", "disk-full"])
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    modes = {"forever": write_forever, "open": open_once, "disk-full": disk_full}
    try:
        modes[args.mode](args.path)
    except StoreError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
