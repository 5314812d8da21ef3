"""``python -m probe.testing``: serve the demo story's simulated cluster on a port."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence

from probe.testing._flink import FakeCluster, FakeFlinkServer
from probe.testing._story import DEMO_JOBS, demo_cluster, play, story_events


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m probe.testing",
        description="Serve a simulated Flink 2.3 REST API playing the demo story.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument(
        "--at",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="start this far into the story (what came before is played at once)",
    )
    parser.add_argument(
        "--still", action="store_true", help="stay at that moment: play nothing further"
    )
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


async def _serve(args: argparse.Namespace) -> None:
    cluster = demo_cluster(FakeCluster(), at=args.at)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with FakeFlinkServer(cluster, host=args.host, port=args.port) as server:
        # One JSON line, so that a parent process can learn the (maybe chosen) port.
        print(json.dumps({"url": server.url, "jobs": DEMO_JOBS}), flush=True)
        if args.still:
            await stop.wait()
            return
        story = asyncio.create_task(play(cluster, story_events(), asyncio.sleep, after=args.at))
        await stop.wait()
        story.cancel()


if __name__ == "__main__":
    sys.exit(main())
