"""The systemd notify protocol (``sd_notify``), in pure Python, for ``Type=notify`` services.

A message is one datagram of ``KEY=VALUE`` lines to ``$NOTIFY_SOCKET`` (a path, or an abstract
socket written with ``@``). Sending never blocks and never raises into the caller: a service
must keep running when its supervisor cannot be told something; the first failure is logged,
later ones are not. `run_watchdog` pings at half of ``$WATCHDOG_USEC`` and only while the
caller's health check passes, so a stuck probe loop, not only a dead process, gets restarted.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

import anyio

from probe._cogs.logs import get_logger

log = get_logger("flink_probe.sdnotify")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"


class Notifier:
    """Tells systemd about the service's life cycle; does nothing when not run by systemd."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
    ) -> None:
        """`address`: ``$NOTIFY_SOCKET`` (None or empty: disabled). `watchdog_usec` and
        `watchdog_pid`: ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``, parsed."""
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._socket: socket.socket | None = None
        self._failure_logged = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        return cls(
            environ.get(NOTIFY_SOCKET_ENV),
            watchdog_usec=_positive_int(environ.get(WATCHDOG_USEC_ENV)),
            watchdog_pid=_positive_int(environ.get(WATCHDOG_PID_ENV)),
        )

    @property
    def enabled(self) -> bool:
        """True when systemd (or another supervisor) listens for notifications."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled
        recommends), or None when the watchdog is off or meant for another process."""
        if not self.enabled or self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete: ``READY=1``."""
        return self._send("READY=1", status)

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``: ``STATUS=...``."""
        return self._send(None, text)

    def watchdog(self) -> bool:
        """Still alive and working: ``WATCHDOG=1``."""
        return self._send("WATCHDOG=1", None)

    def reloading(self, status: str | None = None) -> bool:
        """A reload of the configuration starts; `ready` ends it. systemd >= 253 wants the
        monotonic time of the request along (``Type=notify-reload``); older ones ignore it."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}", status)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun: ``STOPPING=1``."""
        return self._send("STOPPING=1", status)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, assignments: str | None, status: str | None) -> bool:
        """Send one datagram; True if it was handed to the socket."""
        if self._address is None:
            return False
        lines = [] if assignments is None else [assignments]
        if status is not None:
            # A newline would end the STATUS= assignment and start another one.
            lines.append("STATUS=" + " ".join(status.splitlines()))
        message = "\n".join(lines).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._socket.sendto(message, self._address)
        except OSError as error:
            if not self._failure_logged:
                self._failure_logged = True
                log.warning(
                    "cannot notify systemd; further failures are not logged",
                    socket=_printable(self._address),
                    error=error.strerror or str(error),
                )
            return False
        return True


async def run_watchdog(
    notifier: Notifier, healthy: Callable[[], bool], interval: float | None = None
) -> None:
    """Send ``WATCHDOG=1`` every `interval` seconds (default: `Notifier.watchdog_interval`)
    while `healthy()` is true; returns at once when there is no watchdog. Runs until
    cancelled. The pings come from the event loop itself, so a blocked loop stops them too."""
    period = notifier.watchdog_interval() if interval is None else interval
    if period is None or not notifier.enabled:
        return
    while True:
        if healthy():
            notifier.watchdog()
        await anyio.sleep(period)


def _socket_address(address: str) -> str | bytes:
    if address.startswith("@"):
        # An abstract socket: its name starts with a NUL byte instead of the @.
        return b"\0" + address[1:].encode()
    return address


def _printable(address: str | bytes) -> str:
    if isinstance(address, bytes):
        return "@" + address[1:].decode(errors="replace")
    return address


def _positive_int(text: str | None) -> int | None:
    if text is None or not text.strip().isdigit():
        return None
    value = int(text)
    return value if value > 0 else None
