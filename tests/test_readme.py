"""The README tells the truth: its diagram, config keys, metrics and commands match the code."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from probe._config.models import Config, JobConfig, TargetConfig
from probe._core.states import mermaid
from probe._runtime.book import JobBook
from probe._web.metrics import JOB_FAMILIES, DaemonMetrics, StateCollector
from probe.cli import build_parser

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_state_diagram_is_generated_from_the_transition_table() -> None:
    blocks = re.findall(r"```mermaid\n(.*?)```", README, re.S)
    assert blocks, "README has no mermaid block"
    assert blocks[0].strip() == mermaid().strip()


def _keys(model: type[BaseModel], prefix: str) -> list[str]:
    return [f"{prefix}{name}" for name in model.model_fields]


def test_every_config_key_is_documented() -> None:
    keys: list[str] = []
    for section, field in Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _keys(annotation, f"{section}.")
    keys += _keys(TargetConfig, "targets[].") + _keys(JobConfig, "jobs[].")
    missing = [key for key in keys if f"`{key}`" not in README]
    assert not missing, f"config keys missing from README: {missing}"


class _EmptyStore:
    def load(self) -> list[object]:
        return []

    def write_batch(self, jobs: object) -> None:
        return None

    def close(self) -> None:
        return None


def test_every_metric_is_documented() -> None:
    registry = CollectorRegistry()
    DaemonMetrics(registry)
    registry.register(StateCollector(JobBook(_EmptyStore()), dict))  # type: ignore[arg-type]
    names = {f.name + ("_total" if f.type == "counter" else "") for f in JOB_FAMILIES}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        names.add(name)
    missing = sorted(name for name in names if f"`{name}`" not in README)
    assert not missing, f"metrics missing from README: {missing}"


def test_every_command_is_documented() -> None:
    parser = build_parser()
    commands = next(
        action for action in parser._actions if action.dest == "command"
    ).choices  # argparse keeps sub-parsers on a private list
    assert commands
    for name in commands:
        assert f"flink-probe {name}" in README, f"command {name!r} missing from README"
