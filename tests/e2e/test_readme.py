"""The README tells the truth both ways: what it lists exists, and what exists it lists (config
keys, metrics, command-line flags, HTTP paths); its state diagram is the transition table's."""

from __future__ import annotations

import argparse
import itertools
import re
import time
from pathlib import Path
from typing import Any, get_args, get_origin

from daemon_harness import daemon_config, running_daemon, target
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from probe._config import Config
from probe._core.states import mermaid
from probe._runtime.book import JobBook
from probe._store import open_store
from probe._web.metrics import JobSeriesRenderer
from probe._web.server import Api, Liveness
from probe.cli import build_parser
from probe.testing import FakeCluster, FakeFlinkServer

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def section(title: str) -> str:
    """The README's section `## title`, up to the next section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match[1]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every body row of the Markdown tables in `text` (not the header)."""
    rows: list[list[str]] = []
    lines = text.splitlines()
    for previous, line in itertools.pairwise(lines):
        if (
            line.startswith("|")
            and previous.startswith("|")
            and not re.fullmatch(r"[|:\- ]+", line)
        ):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def first_cells(title: str) -> dict[str, list[str]]:
    """The rows of the section's tables by their first cell (without its backticks)."""
    return {row[0].strip("`"): row for row in table_rows(section(title))}


def test_state_diagram_is_generated_from_the_transition_table() -> None:
    blocks = re.findall(r"```mermaid\n(.*?)```", README, re.S)
    assert blocks, "README has no mermaid block"
    assert blocks[0].strip() == mermaid().strip()


# -- configuration keys ----------------------------------------------------------------------


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (itself, optional, or the items of a list or a mapping), if any."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def keys_of(model: type[BaseModel], prefix: str) -> dict[str, type[BaseModel] | None]:
    """The keys of `model` after `prefix`, with the model of each value that has keys of its
    own; the entries of a mapping of models (`enrollment.profiles`) as `<name>`."""
    keys: dict[str, type[BaseModel] | None] = {}
    for key, field in model.model_fields.items():
        value_model = model_in(field.annotation)
        if get_origin(field.annotation) is dict and value_model is not None:
            keys |= keys_of(value_model, f"{prefix}{key}.<name>.")
        else:
            keys[prefix + key] = value_model
    return keys


def config_keys() -> dict[str, type[BaseModel] | None]:
    """Every key of the configuration file as the README names it (`probe.interval`,
    `targets[].url`, `targets_refresh`), with the model of its value when that has keys of its
    own."""
    keys: dict[str, type[BaseModel] | None] = {}
    for name, field in Config.model_fields.items():
        section_model = model_in(field.annotation)
        if section_model is None:
            keys[name] = None  # a top-level value: targets_files, targets_refresh
        else:
            list_of = get_origin(field.annotation) is list
            keys |= keys_of(section_model, f"{name}[]." if list_of else f"{name}.")
    return keys


def test_the_config_keys_are_the_documented_ones() -> None:
    keys = config_keys()
    documented = first_cells("Configuration")
    assert sorted(set(keys) - set(documented)) == [], "keys the README does not list"
    assert sorted(set(documented) - set(keys)) == [], "keys the README lists that do not exist"
    for key, model in keys.items():
        if model is not None:
            row = " ".join(documented[key])
            missing = [name for name in model.model_fields if f"`{name}`" not in row]
            assert not missing, f"{key}: sub-keys not named in its README row: {missing}"


# -- metrics -------------------------------------------------------------------------------


SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
"""The series of a family, after its name: the only ones the README's table implies."""


async def scrape_after_a_probe(tmp_path: Path) -> str:
    """`/metrics` of a daemon that probed a fake cluster with one running job."""
    cluster = FakeCluster()
    cluster.submit("orders")
    async with FakeFlinkServer(cluster) as flink:
        config = daemon_config(tmp_path / "state.db", [target("prod", flink.url)])
        async with running_daemon(config) as daemon:
            await daemon.wait_metrics(
                lambda metrics: (
                    metrics.total("flink_probe_probes_total", result="success")
                    and metrics.series("flink_probe_job_restarts_total")
                ),
                "a successful probe round of a started Job",
            )
            return (await daemon.request("/metrics")).text


async def test_the_metrics_are_the_documented_ones(tmp_path: Path) -> None:
    families = list(text_string_to_metric_families(await scrape_after_a_probe(tmp_path)))
    exported = {
        family.name + ("_total" if family.type == "counter" else ""): family.type
        for family in families
    }
    documented = {name: row[1] for name, row in first_cells("Metrics").items()}
    assert exported == documented, "README metrics table (left) and /metrics differ"

    undocumented = sorted(
        sample.name
        for family in families
        for sample in family.samples
        if sample.name
        not in {family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",))}
    )
    assert undocumented == [], "series no README metric stands for"
    mentioned = set(re.findall(r"\bflink_probe_\w+", README))
    assert sorted(mentioned - set(exported)) == [], "README mentions metrics that do not exist"


# -- command line --------------------------------------------------------------------------


def parsers() -> dict[str, argparse.ArgumentParser]:
    """`flink-probe`'s parser ("") and each command's, by command name."""
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"": parser, **commands.choices}


def test_the_commands_and_flags_are_the_documented_ones() -> None:
    documented: dict[str, set[str]] = {}
    for usage in first_cells("Command line"):
        words = usage.split()
        assert words[0] == "flink-probe", usage
        command = "" if words[1].startswith("-") else words[1]
        flags = re.findall(r"(?<![\w-])--?[a-z][a-z-]*", usage)
        documented.setdefault(command, set()).update(flags)

    assert sorted(documented) == sorted(parsers())
    for command, parser in parsers().items():
        options = [
            action.option_strings
            for action in parser._actions
            if action.option_strings and not isinstance(action, argparse._HelpAction)
        ]
        assert sorted(documented[command] - {o for opts in options for o in opts}) == [], (
            f"flink-probe {command}: the README shows flags it does not have"
        )
        undocumented = [opts for opts in options if not set(opts) & documented[command]]
        assert undocumented == [], f"flink-probe {command}: flags the README does not show"


# -- HTTP paths ----------------------------------------------------------------------------


HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def route_key(method: str, path: str) -> tuple[str, str]:
    """A route with its parameters unnamed (`{ns}` and `{namespace}` are the same path)."""
    return method, re.sub(r"\{[^}]*\}", "{}", path)


def test_the_http_routes_are_the_documented_ones(tmp_path: Path) -> None:
    store = open_store(tmp_path / "state.db")
    try:
        book = JobBook(store)
        liveness = Liveness(time.monotonic, stale_after=lambda: 1.0, targets_probed=lambda: True)
        app = Api(book, CollectorRegistry(), liveness, JobSeriesRenderer(book, 60.0)).app()
        served = {
            route_key(route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None and route.method != "HEAD"  # HEAD comes with GET
        }
    finally:
        store.close()

    documented: set[tuple[str, str]] = set()
    for cell in first_cells("HTTP endpoints"):
        # `GET /metrics`, or `POST`, `PUT` on `/a` and `/b`: each method on each path.
        spans = [span.split() for span in re.findall(r"`([^`]*)`", f"`{cell}`")]
        methods = [words[0] for words in spans if words[0] in HTTP_METHODS]
        paths = [words[-1] for words in spans if words[-1].startswith("/")]
        assert methods, f"no method in {cell!r}"
        assert paths, f"no path in {cell!r}"
        documented |= {route_key(method, path) for method in methods for path in paths}
    assert sorted(served - documented) == [], "routes the README does not list"
    assert sorted(documented - served) == [], "routes the README lists that are not served"
