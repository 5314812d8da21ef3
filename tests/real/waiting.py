"""Wait on a condition with a deadline, never on a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TypeVar

T = TypeVar("T")

POLL_INTERVAL_S: Final = 0.2


class WaitTimeout(AssertionError):
    """The condition did not come true in time; the message says what was awaited and last seen."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = POLL_INTERVAL_S,
) -> T:
    """Call `predicate` until it returns a truthy value, and return that value.

    A predicate that raises `OSError` (connection refused while a server starts, a reset, or an
    HTTP error from `urllib`) counts as "not yet": servers under test are expected to be
    unreachable for a while. The timeout message names `what`, the last value and last error.
    """
    deadline = time.monotonic() + timeout
    last_value: object = None
    last_error: OSError | None = None
    while True:
        try:
            value = predicate()
        except OSError as error:
            last_error = error
        else:
            if value:
                return value
            last_value = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"timed out after {timeout:.1f} s waiting for {what} "
                f"(last value: {last_value!r}, last error: {last_error!r})"
            )
        time.sleep(interval)
