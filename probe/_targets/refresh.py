"""What the file and HTTP sources share: waking up to read again, and failures told once."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import anyio

from probe._cogs.logs import get_logger
from probe._targets.discovered import DiscoveredTarget, Source

__all__ = ["Episodes", "Publish", "Wake"]

log = get_logger("flink_probe.targets")

Publish = Callable[[tuple[DiscoveredTarget, ...]], None]
"""Receives a source's whole list of targets, each time it changes."""


class Wake:
    """Ends a source's wait: its refresh period passed, a reload asked, or a change was seen."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._event = anyio.Event()

    def set(self) -> None:
        """Read again now (SIGHUP, or a change the watcher saw)."""
        self._event.set()

    async def wait(self) -> None:
        """Until `set` or `every` seconds; a `set` while the source reads wakes the next wait."""
        with anyio.move_on_after(self.every):
            await self._event.wait()
        self._event = anyio.Event()


class Episodes:
    """Failing parts of one source (files, a URL): each logged when it starts failing and when
    it stops, and counted once per episode (`on_error`), however often it is read meanwhile."""

    def __init__(self, source: Source, on_error: Callable[[], None]) -> None:
        self._source = source
        self._on_error = on_error
        self._failing: dict[str, str] = {}

    def update(self, failing: Mapping[str, str]) -> None:
        """The parts failing now (part -> one-line error); the others read well."""
        for part, error in failing.items():
            if part not in self._failing:
                log.warning(
                    "targets refused; keeping the last good list",
                    source=self._source,
                    part=part,
                    error=error,
                )
                self._on_error()
        for part in self._failing.keys() - failing.keys():
            log.info("targets read again", source=self._source, part=part)
        self._failing = dict(failing)
