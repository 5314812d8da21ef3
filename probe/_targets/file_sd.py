"""Prometheus file_sd: target groups in JSON or YAML files, re-read whenever they change.

A file holds a list of ``{targets: [url, ...], labels: {...}}``. Of the labels, ``namespace``,
``deployment``, ``name`` and ``profile`` are understood and the others ignored, so a file
written for Prometheus serves as it is. A file that cannot be read or parsed (a half-written
one, say) is refused whole and its last good targets are kept.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import anyio
import watchfiles
import yaml

from probe._cogs.errors import one_line
from probe._config.discovery import check_name, target_url
from probe._config.documents import MAX_DEPTH, load_json
from probe._config.errors import describe, format_loc
from probe._targets.discovered import DEFAULT_NAMESPACE, DiscoveredTarget, Source, url_name
from probe._targets.refresh import Episodes, Publish, Wake

__all__ = [
    "FileTargets",
    "Format",
    "TargetList",
    "file_format",
    "parse_targets",
]

Format = Literal["json", "yaml"]
_FORMATS: Final[Mapping[str, Format]] = {".json": "json", ".yml": "yaml", ".yaml": "yaml"}
_GROUP_KEYS: Final = frozenset({"targets", "labels"})
_TOO_DEEP: Final = f"nested too deeply (more than {MAX_DEPTH} levels)"
_YAML_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader where PyYAML has it: a list of many targets reads several times faster."""


def file_format(path: str) -> Format:
    """JSON or YAML, by the file's extension as Prometheus tells them; ValueError if neither."""
    found = _FORMATS.get(os.path.splitext(path)[1].lower())
    if found is None:
        raise ValueError("not a targets file: the name must end with .json, .yml or .yaml")
    return found


def parse_targets(
    text: str | bytes, fmt: Format, source: Source = "file"
) -> tuple[DiscoveredTarget, ...]:
    """The targets of a file_sd document; ValueError of one line, saying where, if it is wrong."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
    if not text.strip():
        # Also how a file looks while it is being rewritten: write [] for no targets.
        raise ValueError("empty (write [] for no targets)")
    document = load_json(text) if fmt == "json" else _load_yaml(text)
    if not isinstance(document, list):
        raise ValueError(
            f"must be a list of target groups ({{targets: [...], labels: {{...}}}}),"
            f" got {describe(document)}"
        )
    targets: list[DiscoveredTarget] = []
    for index, group in enumerate(document):
        try:
            targets += _group_targets(group, source)
        except _Located as error:
            raise ValueError(f"{format_loc((index, *error.loc))}: {error.message}") from None
    return tuple(targets)


def _load_yaml(text: str) -> object:
    # Nesting needs no check beyond the loader's: `_group_targets` walks a fixed shape.
    try:
        document: object = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "malformed"
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"invalid YAML{position}: {problem}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"invalid YAML: {one_line(str(error))}") from None
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    return document


class _Located(Exception):
    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def _group_targets(group: object, source: Source) -> list[DiscoveredTarget]:
    if not isinstance(group, dict):
        raise _Located((), f"must be a mapping with targets and labels, got {describe(group)}")
    for key in group.keys() - _GROUP_KEYS:
        raise _Located((str(key),), "unknown key (a target group has targets and labels)")
    urls = group.get("targets") or []
    labels = group.get("labels") or {}
    if not isinstance(urls, list):
        raise _Located(("targets",), f"must be a list of URLs, got {describe(urls)}")
    if not isinstance(labels, dict):
        raise _Located(("labels",), f"must be a mapping of names to values, got {describe(labels)}")
    for label, value in labels.items():
        if not isinstance(value, str):
            raise _Located(("labels", str(label)), f"must be a string, got {describe(value)}")
    namespace = _label(labels, "namespace", check_name) or DEFAULT_NAMESPACE
    deployment = _label(labels, "deployment", _non_empty)
    name = _label(labels, "name", check_name)
    profile = _label(labels, "profile", check_name)
    if name is not None and len(urls) > 1:
        raise _Located(("labels", "name"), f"names one target, but the group has {len(urls)}")
    targets = []
    for index, text in enumerate(urls):
        if not isinstance(text, str):
            raise _Located(("targets", index), f"must be a URL, got {describe(text)}")
        try:
            url = target_url(text)
        except ValueError as error:
            raise _Located(("targets", index), str(error)) from None
        targets.append(
            DiscoveredTarget(
                name=name or url_name(url),
                url=url,
                namespace=namespace,
                deployment=deployment,
                profile=profile,
                source=source,
            )
        )
    return targets


def _label(labels: Mapping[str, str], key: str, check: Callable[[str], str]) -> str | None:
    value = labels.get(key)
    if not value:  # Prometheus treats an empty label as an absent one
        return None
    try:
        return check(value)
    except ValueError as error:
        raise _Located(("labels", key), str(error)) from None


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


@dataclass(frozen=True, slots=True)
class TargetList:
    """A source's last good targets, and why its newest text was refused (None: it was not)."""

    targets: tuple[DiscoveredTarget, ...] = ()
    error: str | None = None

    def fold(self, text: str | bytes, fmt: Format, where: str, source: Source) -> TargetList:
        """The list after reading `text`: its targets, or these targets and the error."""
        try:
            return TargetList(parse_targets(text, fmt, source))
        except ValueError as error:
            return self.failed(f"{where}: {error}")

    def failed(self, error: str) -> TargetList:
        """The list when no text could be had (the error says where and why)."""
        return TargetList(self.targets, error)


@dataclass(frozen=True, slots=True)
class _File:
    digest: bytes
    """Of the text last read: an unchanged file is not parsed again."""
    targets: TargetList


class FileTargets:
    """The targets of every file that a glob of ``targets_files`` matches, kept up to date.

    `run` reads the files, then again whenever watchfiles sees a change in their directories,
    every `refresh` seconds in any case (changes on network file systems go unseen), and at
    `reload`. It publishes the whole list each time it changes. `on_error` counts each file's
    episode of failing; it is called in the worker thread that reads the files.
    """

    def __init__(
        self, globs: Sequence[str], refresh: float, on_error: Callable[[], None] = lambda: None
    ) -> None:
        self.globs = tuple(globs)
        self._wake = Wake(refresh)
        self._episodes = Episodes("file", on_error)
        self._files: dict[str, _File] = {}

    def reload(self) -> None:
        """Read every file again now (SIGHUP)."""
        self._wake.set()

    def read(self) -> tuple[DiscoveredTarget, ...]:
        """One pass over the files (blocking I/O): the targets of each, in the files' order."""
        files = {}
        for path in _matching(self.globs):
            previous = self._files.get(path, _File(b"", TargetList()))
            files[path] = _read(path, previous)
        self._files = files
        self._episodes.update(
            {path: f.targets.error for path, f in files.items() if f.targets.error is not None}
        )
        return tuple(target for f in files.values() for target in f.targets.targets)

    async def run(self, publish: Publish) -> None:
        """Read and publish until cancelled; the first list is published at once."""
        published: tuple[DiscoveredTarget, ...] | None = None
        async with anyio.create_task_group() as tasks:
            watching: tuple[frozenset[str], anyio.Event] = (frozenset(), anyio.Event())
            try:
                while True:
                    directories = frozenset(_directories(self.globs))
                    if directories != watching[0]:
                        watching[1].set()  # stops the watcher of the old directories
                        watching = (directories, anyio.Event())
                        if directories:
                            # Its first step (before the read's thread) registers the watch:
                            # a change after the read is seen.
                            tasks.start_soon(self._watch, sorted(directories), watching[1])
                    targets = await anyio.to_thread.run_sync(self.read)
                    if targets != published:
                        publish(targets)
                        published = targets
                    await self._wake.wait()
            finally:
                # Before the task group waits for it: the watcher's thread sees this at once,
                # where a cancellation would wait for its next timeout.
                watching[1].set()

    async def _watch(self, directories: Sequence[str], stop: anyio.Event) -> None:
        # Into subdirectories only for a glob with a wildcard before its file name.
        recursive = any(glob.has_magic(str(Path(p).parent)) for p in self.globs)
        try:
            async for _ in watchfiles.awatch(*directories, stop_event=stop, recursive=recursive):
                self._wake.set()
        except OSError:
            return  # a directory went away: the refresh goes on, and a new one is watched


def _read(path: str, previous: _File) -> _File:
    try:
        fmt = file_format(path)
        data = Path(path).read_bytes()
    except ValueError as error:
        return _File(b"", previous.targets.failed(f"{path}: {error}"))
    except OSError as error:
        reason = error.strerror or one_line(str(error))
        return _File(b"", previous.targets.failed(f"{path}: cannot read: {reason}"))
    digest = hashlib.blake2b(data, digest_size=16).digest()
    if digest == previous.digest:
        return previous
    return _File(digest, previous.targets.fold(data, fmt, path, "file"))


def _matching(globs: Iterable[str]) -> list[str]:
    """The files the globs match, each once, in the order of the globs, then of their names."""
    seen: dict[str, None] = {}
    for pattern in globs:
        for path in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
            if os.path.isfile(path):
                seen.setdefault(path)
    return list(seen)


def _directories(globs: Iterable[str]) -> list[str]:
    """The existing directories to watch: each glob's part before its first wildcard."""
    found = []
    for pattern in globs:
        parts = Path(os.path.expanduser(pattern)).parts
        fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts) - 1)
        directory = Path(*parts[:fixed]) if fixed else Path()
        if directory.is_dir():
            found.append(str(directory))
    return found
