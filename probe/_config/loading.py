"""Loading the configuration: the YAML file, then ``FLINK_PROBE_...`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from probe._config.documents import load_json, read_mapping
from probe._config.errors import ConfigError, Loc, describe, error_lines
from probe._config.models import Config

__all__ = ["CONFIG_FILE_ENV", "ENV_PREFIX", "SIDECAR_TARGET", "load_config"]

ENV_PREFIX: Final = "FLINK_PROBE_"
CONFIG_FILE_ENV: Final = "FLINK_PROBE_CONFIG"
STATE_DIRECTORY_ENV: Final = "STATE_DIRECTORY"
"""Set by systemd for ``StateDirectory=``; a relative ``state.path`` is resolved inside it."""

SIDECAR_TARGET: Final[Mapping[str, object]] = {
    "name": "local",
    "url": "http://127.0.0.1:8081/",
    "discover": True,
    "namespace": "default",
}
"""The one target without a file: the JobManager next to the daemon, every job discovered."""


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """The effective configuration: `path` (or ``$FLINK_PROBE_CONFIG``), then the environment.

    Without a file, the defaults with `SIDECAR_TARGET`; a file that declares no targets has
    none. ``FLINK_PROBE_<SECTION>__<KEY>`` sets one key of a section, ``FLINK_PROBE_TARGETS``
    and ``FLINK_PROBE_JOBS`` replace a list with a JSON array; any other variable under the
    prefix is an error. Secrets named by ``*_env`` keys are read from `environ`.

    Raises ConfigError with every mistake found, one line each.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_FILE_ENV):
        path = Path(environ[CONFIG_FILE_ENV])
    errors: list[str] = []
    data: dict[Any, Any] | None = {"targets": [dict(SIDECAR_TARGET)]}
    if path is not None:
        try:
            data = read_mapping(path, f"config file {path}", Config.model_fields)
        except ConfigError as error:
            errors += error.errors
            data = None
    overrides = _apply_environment(data if data is not None else {}, environ, errors)
    config: Config | None = None
    if data is not None:
        try:
            config = Config.model_validate(data, context={"environ": environ})
        except ValidationError as error:
            errors += error_lines(error, overrides)
    if errors or config is None:
        raise ConfigError(errors)
    if config.state.path is None:
        return config
    state_path = _resolve_state_path(config.state.path, environ)
    return config.model_copy(update={"state": config.state.model_copy(update={"path": state_path})})


def _apply_environment(
    data: dict[Any, Any], environ: Mapping[str, str], errors: list[str]
) -> dict[Loc, str]:
    """Merge ``FLINK_PROBE_...`` variables into `data`; returns which key path each one set."""
    # Not pydantic-settings: it ignores unknown variables under the prefix, and its errors
    # name the model's key instead of the variable that set it.
    overrides: dict[Loc, str] = {}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable == CONFIG_FILE_ENV:
            continue
        keys = tuple(variable[len(ENV_PREFIX) :].lower().split("__"))
        try:
            value = _override_value(keys, environ[variable])
        except ValueError as error:
            errors.append(f"{variable}: {error}")
            continue
        if len(keys) == 1:
            data[keys[0]] = value
        elif isinstance(section := data.setdefault(keys[0], {}), dict):
            section[keys[1]] = value  # (a section that is not a mapping is the file's error)
        overrides[keys] = variable
    return overrides


def _override_value(keys: tuple[str, ...], text: str) -> object:
    """What a variable naming `keys` sets; ValueError saying why it sets nothing."""
    sections = {
        name: field.annotation
        for name, field in Config.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    match keys:
        case (section, key) if section in sections and key in sections[section].model_fields:
            return text  # the models parse strings: "5s", "3", "true", "4MiB"
        case (section,) if section in sections:
            example = next(iter(sections[section].model_fields)).upper()
            raise ValueError(f"set one key, e.g. {ENV_PREFIX}{section.upper()}__{example}")
        case (section,) if section in Config.model_fields:
            items = load_json(text)
            if not isinstance(items, list):
                raise ValueError(f"must be a JSON list, got {describe(items)}")
            return items
    raise ValueError("unknown setting")


def _resolve_state_path(path: Path, environ: Mapping[str, str]) -> Path:
    if path.is_absolute():
        return path
    # systemd joins several StateDirectory= entries with ':'; the first is ours.
    state_directory = environ.get(STATE_DIRECTORY_ENV, "").split(":")[0]
    if state_directory:
        return Path(state_directory) / path
    return Path.cwd() / path
