"""What every command shares about failing: its exit codes, and messages of one line."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of every ``flink-probe`` command."""

    OK = 0
    FAILED = 1
    """The command could not do its work: the state store, the listen address, a daemon."""
    USAGE = 2
    """A usage or configuration mistake: the user can fix it."""


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` with its whitespace folded into single spaces, cut to ``limit`` characters."""
    line = " ".join(text.split())
    if limit is None or len(line) <= limit:
        return line
    return line[: limit - 1] + "…"
