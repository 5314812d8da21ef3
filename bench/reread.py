"""The targets files' re-read, step by step in one process: how its cost grows with the targets.

``python -m bench.reread --dir DIR --sizes 2500,5000,10000 --files 10`` writes, for each size,
file_sd files of that many targets (as ``bench/targetfiles.py`` does), then times each step of
what the daemon does with them (the least of ``--repeats`` runs):

- ``read_all``: ``FileTargets.read`` parsing every file (the first read);
- ``read_unchanged``: the same again: every file read and hashed, none parsed;
- ``read_one_changed``: one file changed (a target added): that file parsed again;
- ``merge``: ``merge_targets``, the one name space, building each target's settings;
- ``compare``: the merged set against an equal one (does anything restart?).

It prints one JSON object: seconds by size and step. A cost per target that grows with the
size is a step worse than linear. Run it pinned to a quiet core: the bench runs it on the
daemon's, the daemon stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from probe._targets import FileTargets, merge_targets

from .subject import write_targets_file, write_targets_files

T = TypeVar("T")


def best(step: Callable[[], T], repeats: int, before: Callable[[], None] = lambda: None) -> float:
    """The least wall time of ``repeats`` calls of ``step`` (``before`` runs untimed first)."""
    times = []
    for _ in range(repeats):
        before()
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return min(times)


def measure(
    directory: Path, size: int, files: int, interval: float, repeats: int
) -> dict[str, Any]:
    targets = [(f"t{i:05d}", f"http://127.0.0.1:{20000 + i % 100}/t{i:05d}/") for i in range(size)]
    paths = write_targets_files(directory, targets, files)
    last = paths[-1]
    last_targets = targets[(files - 1) * -(-size // files) :]
    extra = (f"t{size:05d}", f"http://127.0.0.1:20000/t{size:05d}/")
    globs = [str(directory / "*.json")]
    figures: dict[str, float] = {}

    def fresh() -> FileTargets:
        return FileTargets(globs, 30.0)

    readers: list[FileTargets] = []
    figures["read_all"] = best(lambda: readers[-1].read(), repeats, lambda: readers.append(fresh()))
    reader = readers[-1]
    figures["read_unchanged"] = best(reader.read, repeats)
    grown = [False]

    def change_one() -> None:
        grown[0] = not grown[0]
        write_targets_file(last, [*last_targets, extra] if grown[0] else last_targets)

    figures["read_one_changed"] = best(reader.read, repeats, change_one)
    write_targets_file(last, last_targets)
    listed = reader.read()
    figures["merge"] = best(lambda: merge_targets([], listed, {}, interval), repeats)
    merged, again = merge_targets([], listed, {}, interval), merge_targets([], listed, {}, interval)
    figures["compare"] = best(lambda: dict(merged.targets) != dict(again.targets), repeats)
    return {
        "targets": len(listed),
        "seconds": {step: round(value, 6) for step, value in figures.items()},
        "us_per_target": {
            step: round(value / len(listed) * 1e6, 2) for step, value in figures.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reread")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--sizes", required=True, help="comma-separated numbers of targets")
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {
        size: measure(args.dir / str(size), size, args.files, args.interval, args.repeats)
        for size in (int(text) for text in args.sizes.split(","))
    }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
