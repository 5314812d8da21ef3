"""The machine the figures come from, and how busy it was (other work shares it)."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Machine:
    cpus: int
    cpu_model: str
    python: str
    kernel: str

    @classmethod
    def describe(cls) -> Machine:
        model = "unknown"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        return cls(
            cpus=os.cpu_count() or 1,
            cpu_model=model,
            python=platform.python_version(),
            kernel=platform.release(),
        )


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


@dataclass(frozen=True, slots=True)
class CoreTimes:
    busy: int
    total: int


def core_times(cpu: int | None) -> CoreTimes:
    """Jiffies of one core (or all of them) from /proc/stat."""
    label = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == label:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[1:9])
            busy = user + nice + system + irq + softirq + steal
            return CoreTimes(busy=busy, total=busy + idle + iowait)
    return CoreTimes(0, 0)


def busy_share(before: CoreTimes, after: CoreTimes) -> float | None:
    total = after.total - before.total
    return (after.busy - before.busy) / total if total > 0 else None


def pick_cores() -> tuple[int | None, int | None]:
    """(tier core, daemon core): two different cores, or no pinning on a single core."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[-1]


def placement(cpu: int | None, nice: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` pinning a child to ``cpu`` and adding ``nice`` to its niceness (a
    negative value needs root; refused silently, the run says which niceness it asked)."""
    if cpu is None and nice == 0:
        return None

    def place() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        if nice:
            with contextlib.suppress(OSError):
                os.nice(nice)

    return place


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """CPU seconds of a process, all threads: its own (utime + stime), and that of its
    children it has reaped (cutime + cstime); clock-tick resolution."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3; utime, stime, cutime, cstime are 14 to 17.
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def thread_waits(pid: int) -> dict[int, int]:
    """Run-queue delay (ns) so far of every thread of ``pid``, by thread id (schedstat)."""
    waits = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            waits[int(task.name)] = int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return waits


def wait_between(before: dict[int, int], after: dict[int, int]) -> float:
    """Seconds of run-queue delay between two ``thread_waits`` readings. Threads that ended
    in between (worker threads do) take their last part with them: a slight undercount."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items()) / 1e9
