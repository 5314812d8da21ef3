"""Prometheus http_sd: the file_sd target groups, as JSON answered to a GET every `refresh`.

As in Prometheus, only a 200 with a JSON list is an answer; anything else (another status,
a timeout, a body that does not parse) keeps the last good list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import aiohttp

from probe._cogs.errors import one_line
from probe._config.redaction import redact_url
from probe._config.units import format_byte_size, format_duration
from probe._targets.discovered import DiscoveredTarget
from probe._targets.file_sd import TargetList
from probe._targets.refresh import Episodes, Publish, Wake

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_TIMEOUT", "HttpTargets"]

DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_MAX_BODY_BYTES: Final = 16 << 20
"""A list of 100,000 targets fits; a larger answer is refused, not buffered."""
REFRESH_HEADER: Final = "X-Prometheus-Refresh-Interval-Seconds"
"""Sent as Prometheus sends it: endpoints written for Prometheus may read it."""


class HttpTargets:
    """The targets an http_sd endpoint lists, fetched every `refresh` seconds and at `reload`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        refresh: float,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.url = url
        self._where = redact_url(url)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_body_bytes = max_body_bytes
        self._wake = Wake(refresh)
        self._episodes = Episodes("http", on_error)

    def reload(self) -> None:
        """Fetch again now (SIGHUP)."""
        self._wake.set()

    async def fetch(self, previous: TargetList) -> TargetList:
        """The list after one GET: the answer's targets, or `previous`'s and the error."""
        headers = {REFRESH_HEADER: f"{self._wake.every:g}", "Accept": "application/json"}
        try:
            async with self._session.get(
                self.url, headers=headers, timeout=self._timeout
            ) as response:
                if response.status != 200:
                    return previous.failed(f"{self._where}: answered HTTP {response.status}")
                body = bytearray()
                async for chunk in response.content.iter_any():
                    body += chunk
                    if len(body) > self._max_body_bytes:
                        limit = format_byte_size(self._max_body_bytes)
                        return previous.failed(f"{self._where}: answer larger than {limit}")
        except TimeoutError:
            waited = format_duration(self._timeout.total or 0)
            return previous.failed(f"{self._where}: no answer within {waited}")
        except aiohttp.ClientError as error:
            reason = one_line(str(error)) or type(error).__name__
            return previous.failed(f"{self._where}: {reason}")
        return previous.fold(bytes(body), "json", self._where, "http")

    async def run(self, publish: Publish) -> None:
        """Fetch and publish until cancelled; the first list (maybe empty) is published at once."""
        current = TargetList()
        published: tuple[DiscoveredTarget, ...] | None = None
        while True:
            current = await self.fetch(current)
            self._episodes.update({} if current.error is None else {self._where: current.error})
            if current.targets != published:
                publish(current.targets)
                published = current.targets
            await self._wake.wait()
