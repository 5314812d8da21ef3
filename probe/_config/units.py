"""Durations (``500ms``, ``10s``, ``5m``) and byte sizes (``4MiB``) as configuration text."""

from __future__ import annotations

import math
import re
from typing import Annotated, Final

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

__all__ = [
    "MAX_DURATION",
    "ByteSize",
    "Duration",
    "PositiveDuration",
    "Seconds",
    "duration_bounds",
    "format_byte_size",
    "format_duration",
    "parse_byte_size",
    "parse_duration",
]

_SECONDS_PER_UNIT: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(
    r"(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>ms|s|m|h|d)?"
)
_DURATION_HINT: Final = "use e.g. 500ms, 1.5s, 10s, 5m, 1h, 30d, or a number of seconds"

MIN_DURATION: Final = 0.001
"""The shortest duration other than 0: the text's finest unit is the millisecond."""
MAX_DURATION: Final = 87600 * 3600.0
"""Ten years: longer is a mistake, and the daemon's sums of durations stay finite."""


def parse_duration(value: object) -> float:
    """Seconds from ``500ms``, ``1.5s``, ``10s``, ``5m``, ``1h``, ``30d`` or a plain number of
    seconds."""
    if isinstance(value, bool):  # YAML's `yes`/`on` must not become 1 second
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f"must not be negative, got {value!r}")
        match = _DURATION.fullmatch(text)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
        number = float(match["number"])
        unit = match["unit"] or "s"
        # Dividing by 1000 is exact where multiplying by 0.001 is not (0.3 * 1000 != 300).
        seconds = number / 1000 if unit == "ms" else number * _SECONDS_PER_UNIT[unit]
    else:
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if seconds < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``30d``, ``1h``, ``5m``, ``10s``, ``1.5s`` or ``500ms``: a text that parses back to
    `seconds`."""
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        count = seconds / _SECONDS_PER_UNIT[unit]
        if count == int(count) and parse_duration(f"{int(count)}{unit}") == seconds:
            return f"{int(count)}{unit}"
    milliseconds = seconds * 1000
    if seconds < 1 and milliseconds == int(milliseconds):
        text = f"{int(milliseconds)}ms"
        if parse_duration(text) == seconds:
            return text
    return f"{seconds!r}s"


_SIZE_UNITS: Final = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_SIZE = re.compile(r"(?P<number>\d+)\s*(?P<unit>B|KiB|MiB|GiB)?")


def parse_byte_size(value: object) -> int:
    """Bytes from ``4MiB``, ``512KiB``, ``1GiB``, ``100B`` or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = value, "B"
    else:
        match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"invalid size {value!r}: use e.g. 4MiB, 512KiB, or a number of bytes")
        number, unit = int(match["number"]), match["unit"] or "B"
    return number * _SIZE_UNITS[unit]


def format_byte_size(size: int) -> str | int:
    """``4MiB``, ``512KiB`` or a plain number of bytes: a value that parses back to `size`."""
    for unit in ("GiB", "MiB", "KiB"):
        if size and size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return size


def duration_bounds(minimum: float, *, zero: bool = False) -> AfterValidator:
    """Seconds at least `minimum` (or exactly 0, with `zero`) and at most `MAX_DURATION`."""

    def check(seconds: float) -> float:
        if seconds > MAX_DURATION:
            raise ValueError(f"must be at most {format_duration(MAX_DURATION)}")
        if seconds < minimum and not (zero and seconds == 0):
            alternative = "0 or " if zero else ""
            raise ValueError(f"must be {alternative}at least {format_duration(minimum)}")
        return seconds

    return AfterValidator(check)


Seconds = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A duration without bounds; written back as ``10s`` in JSON/YAML dumps."""
Duration = Annotated[Seconds, duration_bounds(MIN_DURATION, zero=True)]
"""0, or 1ms to `MAX_DURATION`."""
PositiveDuration = Annotated[Seconds, duration_bounds(MIN_DURATION)]
"""1ms to `MAX_DURATION`."""
ByteSize = Annotated[
    int,
    BeforeValidator(parse_byte_size),
    PlainSerializer(format_byte_size, return_type=str | int, when_used="json"),
]
