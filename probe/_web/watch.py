"""Watches of the Job and event lists: every committed change as newline-delimited JSON.

Kubernetes' watch format: one ``{"type": "ADDED"|"MODIFIED", "object": ...}`` per change after
the sequence number the client gave, in sequence order, and ``BOOKMARK`` lines saying how far
the stream is complete (after every batch of changes, and after ``heartbeat`` seconds of
silence): a client that resumes from the last one it read gets every later change exactly
once. A reader that does not take a write within ``write_timeout`` is disconnected, so what
waits for it is bounded: one batch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any, Final

import anyio
from aiohttp import web

from probe._cogs.errors import one_line
from probe._cogs.logs import get_logger
from probe._core.events import Reason
from probe._runtime.journal import Journal, stored_event, stored_record
from probe._store import Changes, EventQuery, StoreError
from probe._web.queries import JobSelector, Watch, admits

log = get_logger("flink_probe.api")

WatchEvent = dict[str, Any]
Select = Callable[[Changes], list[WatchEvent]]
"""The watch events of one batch of changes, for one stream."""

WATCH_CONTENT_TYPE: Final = "application/x-ndjson"


class Watches:
    """The open watches: at most ``limit`` at once, all ended by `close`."""

    heartbeat: float = 5.0
    """Seconds of silence after which a stream sends a BOOKMARK."""
    write_timeout: float = 10.0
    """Seconds a reader has to take one write before it is disconnected."""
    batch: int = 500
    """Changes read from the store at once."""

    def __init__(self, journal: Journal, limit: int) -> None:
        self._journal = journal
        self._limit = limit
        self._open: set[anyio.CancelScope] = set()

    @property
    def full(self) -> bool:
        return len(self._open) >= self._limit

    async def serve(
        self, request: web.Request, kind: str, watch: Watch, select: Select
    ) -> web.StreamResponse:
        """Stream the changes committed after ``watch.start`` that ``select`` shows, until
        ``watch.timeout``, the client leaves, the store fails, or `close`."""
        response = web.StreamResponse(
            headers={"Content-Type": WATCH_CONTENT_TYPE, "Cache-Control": "no-store"}
        )
        with anyio.CancelScope() as scope:
            self._open.add(scope)
            try:
                await response.prepare(request)
                with anyio.move_on_after(math.inf if watch.timeout is None else watch.timeout):
                    await self._stream(response, kind, watch.start, select)
            except StoreError as exc:
                log.error(
                    "a watch ended: the store cannot be read", kind=kind, error=one_line(str(exc))
                )
            except TimeoutError:
                log.warning(
                    "a watch reader took no data for too long; disconnected",
                    kind=kind,
                    peer=request.remote,
                    seconds=self.write_timeout,
                )
                if request.transport is not None:
                    request.transport.abort()
            except ConnectionError:
                pass  # the client left
            finally:
                self._open.discard(scope)
        return response

    async def close(self, app: web.Application) -> None:
        """End every watch (the server is shutting down: it waits for open requests)."""
        for scope in list(self._open):
            scope.cancel()

    async def _stream(
        self, response: web.StreamResponse, kind: str, after: int, select: Select
    ) -> None:
        written = time.monotonic()
        while True:
            changes = await self._journal.changes(after, self.batch)
            lines = select(changes)
            after = max(after, changes.sequence)
            if lines:
                await self._write(response, [*lines, bookmark(kind, after)])
                written = time.monotonic()
            if len(changes.jobs) >= self.batch or len(changes.events) >= self.batch:
                continue  # more to read at once
            silence = time.monotonic() - written
            if silence >= self.heartbeat:
                await self._write(response, [bookmark(kind, after)])
                written = time.monotonic()
                silence = 0.0
            with anyio.move_on_after(self.heartbeat - silence):
                await self._journal.wait(after)

    async def _write(self, response: web.StreamResponse, lines: list[WatchEvent]) -> None:
        data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        with anyio.fail_after(self.write_timeout):
            await response.write(data.encode())


def bookmark(kind: str, sequence: int) -> WatchEvent:
    """The stream is complete up to ``sequence``: resume after it."""
    return {"type": "BOOKMARK", "object": {"kind": kind, "metadata": {"resourceVersion": sequence}}}


def job_changes(selector: JobSelector, start: int) -> Select:
    """The Jobs ``selector`` admits, for a stream after ``start``: ADDED the first time the
    stream sends a Job that did not exist at ``start`` (every Job, from 0), MODIFIED
    otherwise. A Job's creation is known by its JOB_STARTING event, written in the same
    commit: a batch holds every event up to its Jobs."""
    created: set[str] = set()
    """After a ``start`` above 0: the Jobs created since that were not sent yet."""
    sent: set[str] = set()
    """From 0: the Jobs sent."""

    def select(changes: Changes) -> list[WatchEvent]:
        if start > 0:
            created.update(
                event.job_id
                for event in changes.events
                if event.reason == Reason.JOB_STARTING
                and event.job_id is not None
                and selector.may_admit(event.namespace, event.deployment_name)
            )
        lines = []
        for row in changes.jobs:
            try:
                job = stored_record(row).shown_job
            except (ValueError, KeyError, TypeError) as exc:
                log.error(
                    "a stored Job is unreadable; not watched",
                    job_id=row.job_id,
                    error=exc.__class__.__name__,
                )
                continue
            if not selector.admits(job):
                continue
            if start == 0:
                added = job.id not in sent
                sent.add(job.id)
            else:
                added = job.id in created
                created.discard(job.id)
            lines.append({"type": "ADDED" if added else "MODIFIED", "object": job.to_wire()})
        return lines

    return select


def event_changes(query: EventQuery) -> Select:
    """The events ``query`` selects, each ADDED."""

    def select(changes: Changes) -> list[WatchEvent]:
        return [
            {"type": "ADDED", "object": stored_event(row).to_wire()}
            for row in changes.events
            if admits(query, row)
        ]

    return select
