"""The floor: the least CPU a probe round's requests can cost in Python with aiohttp.

``python -m bench.floor --spec FILE --rounds R`` does exactly the requests of R probe rounds
of every target (one ``/jobs/overview`` per target, then one ``/jobs/<jid>/metrics?get=
numRestarts`` per job) with the daemon's default concurrency (64 in flight overall, 8 per
target), reads every body and does nothing else: no parsing, no state, no logging. Targets
are probed one after the other, as the daemon's spread schedule mostly has them. It prints
one JSON object: requests, CPU seconds (``resource.getrusage``, all threads), wall seconds.
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
    event_loop: str


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_floor(
    targets: list[tuple[str, list[str]]], rounds: int, concurrency: int, per_target: int
) -> tuple[int, float, float]:
    """(requests, CPU seconds, wall seconds) of ``rounds`` rounds after one warm-up round."""
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
        return requests, _cpu_seconds() - cpu_before, time.perf_counter() - wall_before


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

        requests, cpu, wall = uvloop.run(coroutine)
    else:
        requests, cpu, wall = asyncio.run(coroutine)
    loop = "uvloop" if args.uvloop else "asyncio"
    result = FloorResult(requests=requests, cpu_seconds=cpu, wall_seconds=wall, event_loop=loop)
    json.dump(asdict(result), sys.stdout)


if __name__ == "__main__":
    main()
