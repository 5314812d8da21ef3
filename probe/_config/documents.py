"""Reading YAML files and JSON texts into plain data, refusing duplicate keys and deep nesting."""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any, Final

import yaml

from probe._config.errors import ConfigError, describe

__all__ = ["MAX_DEPTH", "load_json", "nesting_depth", "read_mapping"]

MAX_DEPTH: Final = 100
"""Levels of lists and mappings a document may nest: far beyond any configuration, and short
of the recursion limits of the YAML composer and of pydantic's serializer."""
_TOO_DEEP: Final = f"nested too deeply (more than {MAX_DEPTH} levels)"


class _StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last one,
    so a second ``probe:`` section would silently discard the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # refused by SafeLoader itself: "found unhashable key"
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_mapping(path: Path, where: str, sections: Iterable[str]) -> dict[Any, Any]:
    """The YAML mapping in the file at `path`, without its null values.

    Raises ConfigError with one line starting with `where` (e.g. ``config file PATH``);
    `sections` are the top-level keys it names when the file holds something else.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{where}: not found"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: not UTF-8 text"]) from None
    except OSError as error:
        raise ConfigError([f"{where}: cannot read: {error.strerror or error}"]) from None
    try:
        document = yaml.load(text, Loader=_StrictYamlLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "malformed"
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{where}: invalid YAML{position}: {problem}"]) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"{where}: invalid YAML: {' '.join(str(error).split())}"]) from None
    except RecursionError:
        raise ConfigError([f"{where}: {_TOO_DEEP}"]) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            [
                f"{where}: top level must be a mapping of sections"
                f" ({', '.join(sections)}), got {describe(document)}"
            ]
        )
    if nesting_depth(document) > MAX_DEPTH:
        raise ConfigError([f"{where}: {_TOO_DEEP}"])
    # `jobs:` with every entry commented out reads as null: the same as leaving it out.
    return {key: value for key, value in document.items() if value is not None}


def load_json(text: str) -> object:
    """The JSON value in `text`; ValueError saying why there is none."""
    try:
        value: object = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON: {error}") from None
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    if nesting_depth(value) > MAX_DEPTH:
        raise ValueError(_TOO_DEEP)
    return value


def nesting_depth(document: object) -> float:
    """Levels of lists and mappings in `document`: 0 for a scalar, inf if it contains itself.

    A YAML alias makes a node shared (or, as ``&a [*a]``, part of itself): each one is measured
    once, without recursion, so no document is too deep or too wide to measure.
    """
    depths: dict[int, float] = {}
    open_ids: set[int] = set()  # the containers on the path being walked
    stack: list[tuple[object, bool]] = [(document, False)]
    while stack:
        node, closing = stack.pop()
        children = _containers_in(node)
        if closing:
            open_ids.discard(id(node))
            depths[id(node)] = 1 + max((depths[id(child)] for child in children), default=0)
        elif id(node) in open_ids:
            return math.inf
        elif id(node) not in depths and isinstance(node, dict | list):
            open_ids.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children)
    return depths.get(id(document), 0)


def _containers_in(node: object) -> list[dict[Any, Any] | list[Any]]:
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return [value for value in values if isinstance(value, dict | list)]
