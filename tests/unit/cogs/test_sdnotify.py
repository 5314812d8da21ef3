"""The systemd notify protocol against real Unix datagram sockets (a path, and abstract)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import structlog

from probe._cogs.sdnotify import Notifier, run_watchdog

DEADLINE = 5.0
T = TypeVar("T")


class NotifySocket:
    """What systemd listens on: a datagram socket bound to `address` (`@name`: abstract)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = b"\0" + address[1:].encode() if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.sock.setblocking(False)

    def drain(self) -> list[str]:
        """Every message received so far."""
        messages = []
        while True:
            try:
                messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return messages

    def receive(self) -> str:
        """The next message (waits up to DEADLINE for it)."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            received = self.drain()
            if received:
                assert len(received) == 1, received
                return received[0]
            time.sleep(0.005)
        raise AssertionError(f"no message on {self.address} within {DEADLINE} s")


def within_deadline(action: Callable[[], T]) -> T:
    """`action()` in a thread: a send that blocks fails the test instead of hanging it."""
    outcome: list[T] = []
    worker = threading.Thread(target=lambda: outcome.append(action()), daemon=True)
    worker.start()
    worker.join(DEADLINE)
    assert not worker.is_alive(), f"still blocked after {DEADLINE} s"
    [result] = outcome  # empty if `action` raised (the thread printed why)
    return result


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    if request.param == "path":
        address = str(tmp_path / "notify")
    else:
        address = f"@flink-probe-test-{uuid.uuid4().hex}"
    listener = NotifySocket(address)
    yield listener
    listener.sock.close()


def notifier_for(listener: NotifySocket, **environ: str) -> Notifier:
    return Notifier.from_environ({"NOTIFY_SOCKET": listener.address, **environ})


def test_life_cycle_messages_reach_systemd(notify_socket: NotifySocket) -> None:
    notifier = notifier_for(notify_socket)
    assert notifier.enabled

    assert notifier.ready()
    assert notify_socket.receive() == "READY=1"
    assert notifier.ready(status="watching 3 jobs")
    assert notify_socket.receive() == "READY=1\nSTATUS=watching 3 jobs"
    assert notifier.status("probing 2 targets")
    assert notify_socket.receive() == "STATUS=probing 2 targets"
    assert notifier.watchdog()
    assert notify_socket.receive() == "WATCHDOG=1"
    assert notifier.stopping()
    assert notify_socket.receive() == "STOPPING=1"
    notifier.close()


def test_reloading_carries_the_monotonic_time_of_the_request(
    notify_socket: NotifySocket,
) -> None:
    notifier = notifier_for(notify_socket)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    first, second = notify_socket.receive().split("\n")
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    notifier.close()


def test_a_status_cannot_inject_another_assignment(notify_socket: NotifySocket) -> None:
    notifier = notifier_for(notify_socket)
    notifier.status("line one\nREADY=1")
    assert notify_socket.receive() == "STATUS=line one READY=1"
    notifier.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.watchdog_interval() is None


def test_a_failing_socket_is_logged_once_and_never_raises(tmp_path: Path) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with structlog.testing.capture_logs() as logs:
        assert not notifier.ready()
        assert not notifier.watchdog()
        assert not notifier.stopping()
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1, logs
    assert warnings[0]["socket"] == str(tmp_path / "nobody-listens")
    notifier.close()


def test_a_full_socket_buffer_does_not_block(notify_socket: NotifySocket) -> None:
    """systemd reads slowly (or not at all while it hangs): a send must return at once."""
    notifier = notifier_for(notify_socket)
    with structlog.testing.capture_logs():
        results = within_deadline(lambda: [notifier.status("x" * 1024) for _ in range(10_000)])
    assert results[0]
    assert not all(results), "the receive buffer never filled up"
    notifier.close()


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_this_process(
    environ: dict[str, str], interval: float | None
) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@unused", **environ})
    assert notifier.watchdog_interval() == interval


def test_watchdog_interval_needs_a_notify_socket() -> None:
    assert Notifier.from_environ({"WATCHDOG_USEC": "30000000"}).watchdog_interval() is None


async def test_watchdog_pings_at_its_interval_while_healthy(notify_socket: NotifySocket) -> None:
    # WATCHDOG_USEC=100 ms: a ping every 50 ms.
    notifier = notifier_for(notify_socket, WATCHDOG_USEC="100000")
    pings: list[float] = []
    task = asyncio.create_task(run_watchdog(notifier, lambda: True))
    try:
        deadline = time.monotonic() + DEADLINE
        while len(pings) < 4 and time.monotonic() < deadline:
            for message in notify_socket.drain():
                assert message == "WATCHDOG=1"
                pings.append(time.monotonic())
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
    assert len(pings) >= 4, pings
    # Never faster than the interval (a lower bound: a busy machine may only be slower).
    # The 5 ms allow for the event loop's timer granularity and the polling above.
    assert pings[3] - pings[0] >= 3 * 0.05 - 0.005
    notifier.close()


async def test_watchdog_stops_pinging_while_unhealthy(notify_socket: NotifySocket) -> None:
    notifier = notifier_for(notify_socket, WATCHDOG_USEC="20000")
    healthy = True
    checks = 0

    def health() -> bool:
        nonlocal checks
        checks += 1
        return healthy

    async def wait_checks(count: int) -> None:
        target = checks + count
        deadline = time.monotonic() + DEADLINE
        while checks < target:
            assert time.monotonic() < deadline, f"only {checks} health checks"
            await asyncio.sleep(0.005)

    task = asyncio.create_task(run_watchdog(notifier, health))
    try:
        await wait_checks(3)
        assert "WATCHDOG=1" in notify_socket.drain()

        healthy = False
        notify_socket.drain()  # the pings sent before the flip
        await wait_checks(5)
        assert notify_socket.drain() == []

        healthy = True
        await wait_checks(2)
        assert "WATCHDOG=1" in notify_socket.drain()
    finally:
        task.cancel()
    notifier.close()


async def test_watchdog_without_watchdog_returns_at_once(notify_socket: NotifySocket) -> None:
    notifier = notifier_for(notify_socket)
    await asyncio.wait_for(run_watchdog(notifier, lambda: True), DEADLINE)
    assert notify_socket.drain() == []
