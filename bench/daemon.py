"""A daemon under test as the bench talks to it: its process, its log and its HTTP API."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from . import promtext
from .rounds import LogReader
from .subject import DaemonProcess

# Families read from /metrics (by prefix: a large scrape is too long to parse whole).
WANTED = (
    "flink_probe_jobs{",
    "flink_probe_job_restarts_total",
    "flink_probe_probes_total",
    "flink_probe_requests_total",
    "flink_probe_request_errors_total",
    "flink_probe_job_last_probe_timestamp_seconds",
    "flink_probe_scheduler_lag_seconds",
    "flink_probe_store_commits_total",
    "flink_probe_rounds_skipped_total",
    "flink_probe_target_lease",
    "flink_probe_targets{",
)


class Daemon:
    """One ``flink-probe run`` process, its log read incrementally, and requests to it."""

    def __init__(self, process: DaemonProcess, session: aiohttp.ClientSession) -> None:
        self.process = process
        self.session = session
        self._log = LogReader(process.log_path)

    @property
    def log(self) -> LogReader:
        """The log, read up to now."""
        self._log.read()
        return self._log

    async def get(self, path: str, gzip: bool = False) -> tuple[int, bytes, float]:
        """(status, raw body, seconds from sending to the last byte)."""
        headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
        began = time.perf_counter()
        async with self.session.get(self.process.base_url + path, headers=headers) as response:
            body = await response.read()
        return response.status, body, time.perf_counter() - began

    async def scrape(self) -> tuple[promtext.Scrape, float]:
        """The wanted samples of /metrics, and the wall time the request was sent."""
        sent = time.time()
        status, body, _ = await self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return promtext.Scrape(promtext.parse(body.decode(), WANTED)), sent

    def check_alive(self) -> None:
        if not self.process.alive():
            raise RuntimeError(f"the daemon exited: {self.process.stderr_tail()}")

    async def wait_http(self, path: str, deadline: float, poll: float = 0.01) -> float:
        """Seconds until ``path`` answers 200 (from now)."""
        began = time.monotonic()
        while True:
            self.check_alive()
            try:
                status, _, _ = await self.get(path)
                if status == 200:
                    return time.monotonic() - began
            except aiohttp.ClientError:
                pass
            if time.monotonic() - began > deadline:
                raise RuntimeError(f"{path} did not answer 200 within {deadline:g} s")
            await asyncio.sleep(poll)
