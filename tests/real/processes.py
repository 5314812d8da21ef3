"""Start, kill and stop the external servers of the real-systems tests, by pid.

Every process gets its own session (`setsid`), so a signal meant for it reaches nothing else,
and its output goes to a log file. Processes still alive when the interpreter exits are killed
by an atexit guard, so a crashed or interrupted test run leaves no JVM behind.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

DEFAULT_STOP_TIMEOUT_S: Final = 20.0
_KILL_TIMEOUT_S: Final = 20.0

_live: set[ManagedProcess] = set()


class Service:
    """Something started and stopped by the harness; a context manager that stops it on exit,
    also when starting it failed half-way."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedProcess:
    """One external process that this harness started and alone stops."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        _live.add(self)

    @property
    def pid(self) -> int:
        return self._popen.pid

    def is_running(self) -> bool:
        return self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def kill9(self) -> None:
        """SIGKILL, then reap it: afterwards the pid is really gone (not a zombie)."""
        self._signal(signal.SIGKILL)
        self._popen.wait(timeout=_KILL_TIMEOUT_S)
        _live.discard(self)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """SIGTERM, and SIGKILL if it has not exited after `timeout` seconds."""
        stop_all([self], timeout)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        """Wait until the monotonic `deadline` for it to exit, then SIGKILL it and reap it."""
        try:
            self._popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self._popen.wait(timeout=_KILL_TIMEOUT_S)
        _live.discard(self)

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-max_chars:]

    def _signal(self, signum: signal.Signals) -> None:
        # Until Popen reaps it, the pid cannot be reused, so this reaches our process only.
        if self._popen.poll() is None:
            os.kill(self._popen.pid, signum)

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid})"


def stop_all(processes: Sequence[ManagedProcess], timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
    """SIGTERM all of them at once (they shut down in parallel), SIGKILL any left at the end."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.wait_or_kill(deadline)


def _kill_leftovers() -> None:
    for process in list(_live):
        process.kill9()


atexit.register(_kill_leftovers)
