"""Every target this daemon wants: the configured ones and those of targets files, http_sd and
enrollment (``GET /probe``), merged into one name space each time a source changes.

The file and HTTP sources run as tasks and publish their whole list when it changes; the
enrollment registry changes with each scrape of ``/probe`` and retires targets on time. Each
change merges the lists again (`merge_targets`): the daemon waits on `TargetSources.changes`
and then runs, and claims leases of, what `TargetSources.current` holds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import aiohttp
import anyio
import anyio.abc

from probe._cogs.logs import get_logger
from probe._config import Config
from probe._runtime.instruments import DaemonMetrics
from probe._targets import (
    Decision,
    DiscoveredTarget,
    EnrollmentRegistry,
    FileTargets,
    HttpTargets,
    Source,
    TargetSet,
    merge_targets,
)

log = get_logger("flink_probe.targets")

_Reader = TypeVar("_Reader", FileTargets, HttpTargets)


@dataclass(eq=False)
class _Feed(Generic[_Reader]):
    """A file or HTTP source: what it was built from, its reader, and the scope of its task."""

    source: Source
    settings: Hashable
    reader: _Reader
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class TargetSources:
    """The targets of every source, and the one set merged from them (`current`)."""

    def __init__(
        self,
        config: Config,
        metrics: DaemonMetrics,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`session`: the http_sd client's; `clock`: seconds, for the enrollment TTL."""
        self._config = config
        self._metrics = metrics
        self._session = session
        self._clock = clock
        self.registry = EnrollmentRegistry(config.enrollment)
        self._lists: dict[Source, tuple[DiscoveredTarget, ...]] = {}
        """The last list each file or HTTP source published."""
        self._files: _Feed[FileTargets] | None = None
        self._http: _Feed[HttpTargets] | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._changed = anyio.Event()
        self._expiry_moved = anyio.Event()
        self.current = self._merged()
        self._record(self.current, None)
        self._configure_feeds()

    async def changes(self) -> None:
        """Until `current` changed since the last call returned."""
        await self._changed.wait()
        self._changed = anyio.Event()

    async def read_files(self) -> None:
        """Read the targets files once, now (start-up: the first claim then covers them)."""
        if self._files is not None:
            targets = await anyio.to_thread.run_sync(self._files.reader.read)
            self._publish(self._files, targets)

    async def run(self) -> None:
        """Run the file and HTTP sources and retire enrolled targets when due, until cancelled."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            if self._files is not None:
                self._start(self._files)
            if self._http is not None:
                self._start(self._http)
            await self._retire_when_due()

    def enroll(self, query: Mapping[str, str]) -> Decision:
        """Decide one scrape of ``/probe`` (see `EnrollmentRegistry.enroll`), count a refusal,
        and merge again if the enrolled targets changed."""
        decision = self.registry.enroll(query, self._clock(), self.current)
        if decision.reason is not None:
            self._metrics.enrollments_refused.labels(decision.reason).inc()
            log.debug("enrollment refused", reason=decision.reason, error=decision.message)
        elif decision.outcome == "enrolled" and decision.target is not None:
            target = decision.target
            log.info(
                "target enrolled",
                target=target.name,
                url=target.url,
                namespace=target.namespace,
                deployment=target.deployment,
                profile=target.profile,
            )
        if decision.changed:
            self._expiry_moved.set()
            self._merge()
        return decision

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded configuration: enrollment (retiring what it no longer admits), the
        sources (started anew if their settings changed, else read again now), the merge."""
        self._config = config
        retired = self.registry.reconfigure(config.enrollment)
        if retired:
            log.info(
                "enrolled targets retired: the configuration no longer admits them",
                targets=sorted(target.name for target in retired),
            )
        self._expiry_moved.set()  # enrollment.ttl may have changed
        self._configure_feeds()
        self._merge()

    def _configure_feeds(self) -> None:
        config, errors = self._config, self._metrics.target_source_errors
        files = (tuple(config.targets_files), config.targets_refresh)
        if self._files is not None and self._files.settings == files:
            self._files.reader.reload()
        else:
            self._stop(self._files, bool(config.targets_files))
            self._files = None
            if config.targets_files:
                files_reader = FileTargets(*files, on_error=errors.labels("file").inc)
                self._files = self._start(_Feed("file", files, files_reader))
        http = config.targets_http
        settings = None if http is None else (http.url, http.refresh)
        if self._http is not None and self._http.settings == settings:
            self._http.reader.reload()
            return
        self._stop(self._http, http is not None)
        self._http = None
        if http is not None:
            on_error = errors.labels("http").inc
            http_reader = HttpTargets(self._session, http.url, http.refresh, on_error=on_error)
            self._http = self._start(_Feed("http", settings, http_reader))

    def _start(self, feed: _Feed[_Reader]) -> _Feed[_Reader]:
        """Run `feed`'s task, once `run` has a task group (it starts the feeds it finds)."""

        async def read() -> None:
            with feed.scope:
                await feed.reader.run(lambda targets: self._publish(feed, targets))

        if self._tasks is not None:
            self._tasks.start_soon(read, name=f"targets-{feed.source}")
        return feed

    def _stop(self, feed: _Feed[FileTargets] | _Feed[HttpTargets] | None, replaced: bool) -> None:
        """Stop `feed`'s task; its targets stay until a replacement publishes, else leave."""
        if feed is None:
            return
        feed.scope.cancel()
        if not replaced:
            self._lists.pop(feed.source, None)

    def _publish(
        self, feed: _Feed[FileTargets] | _Feed[HttpTargets], targets: tuple[DiscoveredTarget, ...]
    ) -> None:
        # A feed replaced by a reload may still hand over the list it was reading: ignored.
        if feed is self._files or feed is self._http:
            self._lists[feed.source] = targets
            self._merge()

    async def _retire_when_due(self) -> None:
        while True:
            due = self.registry.next_expiry()
            wait = math.inf if due is None else max(0.0, due - self._clock())
            with anyio.move_on_after(wait):
                await self._expiry_moved.wait()
            self._expiry_moved = anyio.Event()
            retired = self.registry.expire(self._clock())
            if retired:
                log.info(
                    "enrolled targets retired: not scraped for enrollment.ttl",
                    targets=sorted(target.name for target in retired),
                )
                self._merge()

    def _merged(self) -> TargetSet:
        config = self._config
        return merge_targets(
            config.targets,
            [*self._lists.get("file", ()), *self._lists.get("http", ()), *self.registry.targets()],
            config.enrollment.profiles,
            config.probe.interval,
        )

    def _merge(self) -> None:
        merged, previous = self._merged(), self.current
        self.current = merged
        self._record(merged, previous)
        if dict(merged.targets) != dict(previous.targets):
            self._changed.set()

    def _record(self, merged: TargetSet, previous: TargetSet | None) -> None:
        """Log and count each conflict once, and set the targets by source."""
        for rejection in merged.new_rejections(previous):
            log.warning(
                "target left out",
                source=rejection.source,
                target=rejection.target.name,
                url=rejection.target.url,
                reason=rejection.reason,
            )
            self._metrics.target_source_errors.labels(rejection.source).inc()
        for source, count in merged.counts().items():
            self._metrics.targets.labels(source).set(count)
