"""The floor: the least CPU a probe round's requests can cost in Python with aiohttp.

``python -m bench.floor --spec FILE --rounds R`` does the requests of R full probe rounds of
every target (one ``/jobs/overview`` per target, then one ``/jobs/<jid>/metrics?get=
numRestarts`` per job) with the daemon's default concurrency (64 in flight overall, 8 per
target), reads every body and does nothing else: no parsing, no state, no logging. Targets
are probed one after the other, as the daemon's spread schedule mostly has them. Then it does
``10 * R`` rounds of overviews alone, so the two kinds of request are priced apart: the daemon
asks ``numRestarts`` only for Jobs whose count can have changed, and its floor is the price of
the requests it really made. It prints one JSON object: requests and CPU seconds
(``resource.getrusage``, all threads) of both phases, wall seconds of the first.
Run it in a process of its own, pinned to the daemon's core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

DEFAULT_CONCURRENCY = 64
DEFAULT_PER_TARGET_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class FloorResult:
    requests: int
    cpu_seconds: float
    wall_seconds: float
    overview_requests: int
    overview_cpu_seconds: float
    event_loop: str


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_floor(
    targets: list[tuple[str, list[str]]], rounds: int, concurrency: int, per_target: int
) -> FloorResult:
    """Full rounds, then overview-only rounds, after one warm-up round."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=per_target)
    requests = 0

    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(url: str) -> None:
            nonlocal requests
            async with session.get(url, allow_redirects=False) as response:
                await response.read()
            requests += 1

        async def target_round(url: str, jids: list[str]) -> None:
            await get(url + "jobs/overview")
            limit = asyncio.Semaphore(per_target)

            async def metrics(jid: str) -> None:
                async with limit:
                    await get(f"{url}jobs/{jid}/metrics?get=numRestarts")

            await asyncio.gather(*(metrics(jid) for jid in jids))

        # The warm-up round opens the keep-alive connections, as the daemon's first rounds do.
        for url, jids in targets:
            await target_round(url, jids)
        requests = 0
        cpu_before, wall_before = _cpu_seconds(), time.perf_counter()
        for _ in range(rounds):
            for url, jids in targets:
                await target_round(url, jids)
        full_requests, full_cpu = requests, _cpu_seconds() - cpu_before
        wall = time.perf_counter() - wall_before
        requests = 0
        cpu_before = _cpu_seconds()
        for _ in range(10 * rounds):
            for url, _jids in targets:
                await get(url + "jobs/overview")
        return FloorResult(
            requests=full_requests,
            cpu_seconds=full_cpu,
            wall_seconds=wall,
            overview_requests=requests,
            overview_cpu_seconds=_cpu_seconds() - cpu_before,
            event_loop=asyncio.get_running_loop().__class__.__module__.split(".")[0],
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument(
        "--spec", type=Path, required=True, help='JSON [["url", ["jid", ...]], ...]'
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument(
        "--per-target-concurrency", type=int, default=DEFAULT_PER_TARGET_CONCURRENCY
    )
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (if installed)")
    args = parser.parse_args()
    spec: list[Any] = json.loads(args.spec.read_text())
    targets = [(str(url), [str(jid) for jid in jids]) for url, jids in spec]
    coroutine = run_floor(targets, args.rounds, args.concurrency, args.per_target_concurrency)
    if args.uvloop:
        import uvloop

        result = uvloop.run(coroutine)
    else:
        result = asyncio.run(coroutine)
    json.dump(asdict(result), sys.stdout)


if __name__ == "__main__":
    main()
