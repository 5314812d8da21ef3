"""file_sd targets: JSON and YAML files parsed, bad ones refused in one line while the last
good list is kept, and real files edited while the watcher runs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from daemon_harness import wait_until

from probe._targets.discovered import DiscoveredTarget
from probe._targets.file_sd import FileTargets, TargetList, file_format, parse_targets

GROUPS: list[dict[str, Any]] = [
    {
        "targets": ["http://jm-a:8081", "jm-b:8081"],
        "labels": {"namespace": "shop", "deployment": "orders", "env": "prod"},
    },
    {
        "targets": ["https://flink.example:8443/prefix/"],
        "labels": {"name": "billing", "profile": "internal-ca", "__meta_rack": "r1"},
    },
]
EXPECTED = (
    DiscoveredTarget("jm-a:8081", "http://jm-a:8081/", "shop", "orders"),
    DiscoveredTarget("jm-b:8081", "http://jm-b:8081/", "shop", "orders"),
    DiscoveredTarget("billing", "https://flink.example:8443/prefix/", profile="internal-ca"),
)
YAML_TEXT = """\
- targets: [http://jm-a:8081, "jm-b:8081"]
  labels: {namespace: shop, deployment: orders, env: prod}
- targets:
    - https://flink.example:8443/prefix/
  labels:
    name: billing
    profile: internal-ca
    __meta_rack: r1
"""


def test_json_and_yaml_give_the_same_targets_with_the_labels_flink_probe_understands() -> None:
    assert parse_targets(json.dumps(GROUPS), "json") == EXPECTED
    assert parse_targets(YAML_TEXT, "yaml") == EXPECTED


def test_a_target_without_a_name_label_is_named_by_host_port_and_path() -> None:
    text = json.dumps(
        [{"targets": ["http://JM:80", "https://ingress/flink-a/", "http://[::1]:8081"]}]
    )

    assert [t.name for t in parse_targets(text, "json")] == [
        "jm:80",
        "ingress:443/flink-a",
        "[::1]:8081",
    ]


def test_an_empty_label_counts_as_absent_as_in_prometheus() -> None:
    text = json.dumps([{"targets": ["http://a:1"], "labels": {"namespace": "", "name": ""}}])

    assert parse_targets(text, "json") == (DiscoveredTarget("a:1", "http://a:1/"),)


def test_no_targets_is_an_empty_list() -> None:
    assert parse_targets("[]", "json") == ()
    assert parse_targets("- labels: {namespace: x}\n", "yaml") == ()


@pytest.mark.parametrize(
    ("text", "fmt", "error"),
    [
        pytest.param("", "json", "empty (write [] for no targets)", id="empty"),
        pytest.param(" \n", "yaml", "empty (write [] for no targets)", id="blank-yaml"),
        pytest.param(
            '[{"targets": ["http://a:1"',
            "json",
            "invalid JSON: Expecting ',' delimiter: line 1 column 27 (char 26)",
            id="half-written-json",
        ),
        pytest.param(
            "- targets: [http://a:1, http://b",
            "yaml",
            "invalid YAML at line ",
            id="half-written-yaml",
        ),
        pytest.param(
            '{"targets": []}',
            "json",
            "must be a list of target groups ({targets: [...], labels: {...}}), got a mapping",
            id="not-a-list",
        ),
        pytest.param(
            '["http://a:1"]',
            "json",
            "[0]: must be a mapping with targets and labels, got 'http://a:1'",
            id="group-not-a-mapping",
        ),
        pytest.param(
            '[{"targets": [], "label": {}}]',
            "json",
            "[0].label: unknown key (a target group has targets and labels)",
            id="unknown-key",
        ),
        pytest.param(
            '[{"targets": "http://a:1"}]',
            "json",
            "[0].targets: must be a list of URLs, got 'http://a:1'",
            id="targets-not-a-list",
        ),
        pytest.param(
            '[{"targets": [], "labels": ["namespace"]}]',
            "json",
            "[0].labels: must be a mapping of names to values, got a list",
            id="labels-not-a-mapping",
        ),
        pytest.param(
            '[{}, {"targets": ["http://a:1", 8081]}]',
            "json",
            "[1].targets[1]: must be a URL, got 8081",
            id="target-not-a-string",
        ),
        pytest.param(
            '[{"targets": ["ftp://a/"]}]',
            "json",
            "[0].targets[0]: must be an http(s) URL with a host, got 'ftp://a/'",
            id="not-http",
        ),
        pytest.param(
            '[{"targets": ["http://a:1/?x=1"]}]',
            "json",
            "[0].targets[0]: must not have a query or fragment, got 'http://a:1/?x=1'",
            id="query",
        ),
        pytest.param(
            "- targets: [http://a:1]\n  labels: {deployment: 2024}\n",
            "yaml",
            "[0].labels.deployment: must be a string, got 2024",
            id="label-not-a-string",
        ),
        pytest.param(
            '[{"targets": ["http://a:1"], "labels": {"namespace": "a b"}}]',
            "json",
            "[0].labels.namespace: must match [A-Za-z0-9_.-]+, got 'a b'",
            id="bad-namespace",
        ),
        pytest.param(
            '[{"targets": ["http://a:1", "http://b:1"], "labels": {"name": "x"}}]',
            "json",
            "[0].labels.name: names one target, but the group has 2",
            id="one-name-two-targets",
        ),
        pytest.param("[" * 101 + "]" * 101, "json", "nested too deeply", id="too-deep"),
        pytest.param("&a [*a]", "yaml", "[0]: must be a mapping with targets", id="a-loop"),
    ],
)
def test_a_bad_document_is_refused_with_one_line_saying_where(
    text: str, fmt: Any, error: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(error)}") as raised:
        parse_targets(text, fmt)

    assert "\n" not in str(raised.value)


def test_a_password_in_a_target_url_is_refused_without_being_quoted() -> None:
    with pytest.raises(ValueError, match="use a profile") as raised:
        parse_targets('[{"targets": ["http://user:hunter2@jm:8081/"]}]', "json")

    assert "hunter2" not in str(raised.value)


def test_text_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^not UTF-8 text$"):
        parse_targets(b"\xff[]", "json")


def test_the_format_comes_from_the_file_name_as_in_prometheus() -> None:
    assert [file_format(p) for p in ("a.json", "a.yml", "b/A.YAML")] == ["json", "yaml", "yaml"]
    with pytest.raises(ValueError, match=r"must end with \.json, \.yml or \.yaml"):
        file_format("targets.txt")


def test_a_refused_text_keeps_the_last_good_list_and_says_why() -> None:
    good = TargetList().fold(json.dumps(GROUPS), "json", "t.json", "file")
    assert good == TargetList(EXPECTED)

    broken = good.fold('[{"targets": ["http://a:1"', "json", "t.json", "file")
    assert broken.targets == EXPECTED
    assert broken.error is not None
    assert broken.error.startswith("t.json: invalid JSON")

    assert broken.fold("[]", "json", "t.json", "file") == TargetList()


def test_a_first_text_that_is_refused_leaves_no_targets() -> None:
    assert TargetList().fold("[", "json", "t.json", "file").targets == ()


def test_targets_carry_their_source() -> None:
    [target] = parse_targets('[{"targets": ["http://a:1"]}]', "json", "http")

    assert target.source == "http"


# -- reading files --------------------------------------------------------------------------


def write(path: Path, groups: list[dict[str, Any]]) -> None:
    """Written whole through a rename, as a careful writer does."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(groups))
    temporary.replace(path)


def group(*urls: str, **labels: str) -> dict[str, Any]:
    return {"targets": list(urls), "labels": labels}


def urls(targets: tuple[DiscoveredTarget, ...]) -> list[str]:
    return [t.url for t in targets]


def test_read_takes_every_matching_file_in_order(tmp_path: Path) -> None:
    write(tmp_path / "b.json", [group("http://b:1")])
    write(tmp_path / "a.json", [group("http://a:1")])
    (tmp_path / "nested").mkdir()
    write(tmp_path / "nested" / "c.json", [group("http://c:1")])
    (tmp_path / "notes.txt").write_text("not a targets file")

    source = FileTargets([str(tmp_path / "*.json"), str(tmp_path / "**" / "*.json")], 60)

    assert urls(source.read()) == ["http://a:1/", "http://b:1/", "http://c:1/"]


def test_a_removed_file_takes_its_targets_with_it(tmp_path: Path) -> None:
    write(tmp_path / "a.json", [group("http://a:1")])
    write(tmp_path / "b.json", [group("http://b:1")])
    source = FileTargets([str(tmp_path / "*.json")], 60)
    source.read()

    (tmp_path / "a.json").unlink()

    assert urls(source.read()) == ["http://b:1/"]


def test_a_broken_file_keeps_its_last_good_targets_logged_and_counted_once(
    tmp_path: Path,
) -> None:
    counted: list[None] = []
    path = tmp_path / "a.json"
    write(path, [group("http://a:1")])
    source = FileTargets([str(tmp_path / "*.json")], 60, on_error=lambda: counted.append(None))
    source.read()

    with structlog.testing.capture_logs() as logs:
        path.write_text('[{"targets": ["http://a:1", "http://b')
        assert urls(source.read()) == ["http://a:1/"]
        path.write_text("[{")  # still broken, differently: the same episode
        assert urls(source.read()) == ["http://a:1/"]
        write(path, [group("http://b:1")])
        assert urls(source.read()) == ["http://b:1/"]
        path.write_text("")
        assert urls(source.read()) == ["http://b:1/"]

    assert len(counted) == 2
    events = [(e["event"], e.get("error", "")) for e in logs]
    assert [event for event, _ in events] == [
        "targets refused; keeping the last good list",
        "targets read again",
        "targets refused; keeping the last good list",
    ]
    assert events[0][1].startswith(f"{path}: invalid JSON")
    assert events[2][1] == f"{path}: empty (write [] for no targets)"


def test_an_unreadable_file_keeps_its_last_good_targets(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    write(path, [group("http://a:1")])
    source = FileTargets([str(tmp_path / "*.json")], 60)
    source.read()

    path.unlink()
    path.mkdir()  # matched by the glob no more: a directory is not a targets file
    assert source.read() == ()

    path.rmdir()
    path.symlink_to(tmp_path / "missing.json")  # matched, and cannot be read
    write(tmp_path / "b.json", [group("http://b:1")])
    assert urls(source.read()) == ["http://b:1/"]


# -- watching files -------------------------------------------------------------------------


@dataclass
class Published:
    """Every list a running source published, and the errors it counted."""

    lists: list[tuple[DiscoveredTarget, ...]] = field(default_factory=list)
    errors: int = 0

    def publish(self, targets: tuple[DiscoveredTarget, ...]) -> None:
        self.lists.append(targets)

    def count_error(self) -> None:
        self.errors += 1

    def latest(self) -> list[str] | None:
        return urls(self.lists[-1]) if self.lists else None


@asynccontextmanager
async def running(globs: list[str], refresh: float) -> AsyncIterator[tuple[FileTargets, Published]]:
    published = Published()
    source = FileTargets(globs, refresh, on_error=published.count_error)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(source.run, published.publish)
        await until(lambda: published.lists, "the first list")
        yield source, published
        tasks.cancel_scope.cancel()


async def until(condition: Callable[[], object], what: str, within: float = 10.0) -> None:
    async def check() -> object:
        return condition()

    await wait_until(check, what, within)


async def test_an_edited_file_is_seen_without_waiting_for_the_refresh(tmp_path: Path) -> None:
    path = tmp_path / "flink.json"
    write(path, [group("http://a:1")])

    async with running([str(tmp_path / "*.json")], refresh=3600) as (_, published):
        assert published.latest() == ["http://a:1/"]
        write(path, [group("http://a:1", "http://b:1")])
        await until(lambda: published.latest() == ["http://a:1/", "http://b:1/"], "the edit")
        write(tmp_path / "more.json", [group("http://c:1")])
        await until(lambda: len(published.latest() or []) == 3, "the new file")


async def test_a_half_written_file_is_never_acted_on(tmp_path: Path) -> None:
    path = tmp_path / "flink.json"
    write(path, [group("http://a:1", "http://b:1")])
    whole = json.dumps([group("http://a:1", "http://b:1", "http://c:1")])

    async with running([str(tmp_path / "*.json")], refresh=3600) as (_, published):
        path.write_text(whole[: len(whole) // 2])  # in place: the reader may see this
        await until(lambda: published.errors == 1, "the half-written file refused")
        path.write_text(whole)
        await until(lambda: len(published.latest() or []) == 3, "the whole file")

    assert [urls(targets) for targets in published.lists] == [
        ["http://a:1/", "http://b:1/"],
        ["http://a:1/", "http://b:1/", "http://c:1/"],
    ]


async def test_reload_reads_at_once_and_a_directory_made_later_is_watched(tmp_path: Path) -> None:
    directory = tmp_path / "targets"  # missing at first: nothing is watched
    async with running([str(directory / "*.yml")], refresh=3600) as (source, published):
        directory.mkdir()
        (directory / "a.yml").write_text("- targets: [http://a:1]\n")
        source.reload()
        await until(lambda: published.latest() == ["http://a:1/"], "the file read on reload")
        (directory / "b.yml").write_text("- targets: [http://b:1]\n")
        await until(lambda: len(published.latest() or []) == 2, "a new file, watched")


async def test_the_refresh_reads_files_no_watcher_sees(tmp_path: Path) -> None:
    directory = tmp_path / "targets"
    async with running([str(directory / "*.yml")], refresh=0.1) as (_, published):
        directory.mkdir()
        (directory / "a.yml").write_text("- targets: [http://a:1]\n")
        await until(lambda: published.latest() == ["http://a:1/"], "the file read by the refresh")


async def test_cancelling_the_watcher_returns_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("[]")
    published = Published()
    source = FileTargets([str(tmp_path / "*.json")], 3600)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(source.run, published.publish)
        await until(lambda: published.lists, "the first list")
        began = time.monotonic()
        tasks.cancel_scope.cancel()

    # watchfiles' thread would otherwise wait for its own timeout (5 s) to notice.
    assert time.monotonic() - began < 1.0
