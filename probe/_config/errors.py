"""Configuration errors: one line per mistake, ``key.path: problem``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = [
    "REDACTED",
    "ConfigError",
    "Loc",
    "Problem",
    "describe",
    "error_lines",
    "format_loc",
    "located_error",
]

REDACTED: Final = "<redacted>"
"""Shown instead of a value that may be a secret."""

Loc = tuple[str | int, ...]
"""A key path: ('targets', 1, 'url') is ``targets[1].url``."""
Problem = tuple[Loc, str, object]
"""Where, what, and the offending value."""


class ConfigError(Exception):
    """The configuration cannot be used; `errors` holds one line per mistake."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def located_error(model: BaseModel | type[BaseModel], problems: list[Problem]) -> ValidationError:
    """Errors of a model validator at the keys they concern, not at the model itself.

    pydantic keeps the locations of a ValidationError raised inside a validator, relative to
    where that validator runs.
    """
    details = [
        InitErrorDetails(type=PydanticCustomError("config", message), loc=loc, input=value)
        for loc, message, value in problems
    ]
    title = model.__name__ if isinstance(model, type) else type(model).__name__
    return ValidationError.from_exception_data(title, details)


class _Redacted:
    def __repr__(self) -> str:
        return REDACTED


_REDACTED_VALUE: Final = _Redacted()
"""Stands for a value an error must not quote."""


def format_loc(loc: Iterable[str | int]) -> str:
    """('targets', 1, 'url') -> ``targets[1].url``."""
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic's mark of a mapping key's error: the key is named
            continue
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def describe(value: object) -> str:
    """A value as an error quotes it: its kind for containers, else a short repr."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(error: Mapping[str, Any]) -> str:
    kind: str = error["type"]
    context: Mapping[str, Any] = error.get("ctx", {})
    got = describe(error.get("input"))
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(context["error"])
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping, got {got}"
    if kind == "list_type":
        return f"must be a list, got {got}"
    if kind == "string_type":
        return f"must be a string, got {got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {got}"
    if kind == "greater_than_equal":
        return f"must be at least {context['ge']}, got {got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "literal_error":
        return f"must be one of {context['expected']}, got {got}"
    if kind == "config":
        return str(error["msg"])
    return f"{error['msg']}, got {got}"


def error_lines(error: ValidationError, overrides: Mapping[Loc, str] | None = None) -> list[str]:
    """One line per error; one at a key path in `overrides` names the variable that set it."""
    lines = []
    for detail in error.errors():
        loc = tuple(detail["loc"])
        if loc[2:3] == ("headers",):  # targets[i].headers: a header value may be a secret
            detail["input"] = _REDACTED_VALUE
        line = f"{format_loc(loc) or 'config'}: {_message(detail)}"
        source = next(
            (variable for path, variable in (overrides or {}).items() if loc[: len(path)] == path),
            None,
        )
        lines.append(f"{line} (from {source})" if source else line)
    return lines
