"""Sampling profiles of the running daemon with py-spy, summarised.

``py-spy record --format raw --function --nonblocking`` writes collapsed stacks
(``frame;frame;... count``, a frame is ``function (file:first line)``) of the samples where a
thread was running: counts are proportional to CPU time. Summaries: self time by function,
inclusive time by function (each function counted once per stack), self time by package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_FRAME: Final = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, output: Path, rate: int = 250) -> str | None:
    """Profile ``pid`` for ``seconds``; None on success, else why it could not."""
    binary = py_spy_binary()
    if binary is None:
        return "py-spy is not installed (pip install py-spy)"
    command = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--function",
        "--nonblocking",
        "--output",
        str(output),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not output.exists():
        return f"py-spy failed: {(done.stderr or done.stdout).strip()[-500:]}"
    return None


@dataclass(frozen=True, slots=True)
class Hotspot:
    function: str
    share: float
    """Fraction of all samples."""


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    samples: int
    self_time: list[Hotspot]
    inclusive: list[Hotspot]
    inclusive_probe: list[Hotspot]
    """Inclusive time of flink-probe's own functions (``probe/``)."""
    by_package: list[Hotspot]


def _frame_key(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["function"], match["file"]


def _package(file: str) -> str:
    if not file:
        return "(native)"
    head = file.split("/", 1)[0]
    return head.removesuffix(".py") if "/" in file else file.removesuffix(".py")


def summarise(path: Path, top: int = 25) -> ProfileSummary:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_frame_key(frame) for frame in stack.split(";")]
        function, file = frames[-1]
        self_time[f"{function} ({file})"] += count
        packages[_package(file)] += count
        for name in {f"{f} ({p})" for f, p in frames}:
            inclusive[name] += count

    def ranked(counter: Counter[str]) -> list[Hotspot]:
        if not samples:
            return []
        return [Hotspot(name, count / samples) for name, count in counter.most_common(top)]

    own = Counter({name: count for name, count in inclusive.items() if "(probe/" in name})
    return ProfileSummary(
        samples, ranked(self_time), ranked(inclusive), ranked(own), ranked(packages)
    )
