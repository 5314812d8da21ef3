"""Loading the configuration: the YAML file, then ``FLINK_PROBE_...`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Final, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from probe._config.config import Config
from probe._config.documents import load_json, read_mapping
from probe._config.errors import ConfigError, Loc, describe, error_lines

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
    none. ``FLINK_PROBE_<SECTION>__<KEY>`` sets one key of a section, ``FLINK_PROBE_<KEY>`` a
    top-level key (a list or a mapping, such as ``FLINK_PROBE_TARGETS``, as JSON); any other
    variable under the prefix is an error. Secrets named by ``*_env`` keys are read from
    `environ`. A relative ``targets_files`` glob is taken from the file's directory.

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
    resolved: dict[str, object] = {}
    if config.state.path is not None:
        state_path = _resolve_state_path(config.state.path, environ)
        resolved["state"] = config.state.model_copy(update={"path": state_path})
    if path is not None and config.targets_files:
        resolved["targets_files"] = [_beside(path, glob) for glob in config.targets_files]
    return config.model_copy(update=resolved)


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
        name: model
        for name, field in Config.model_fields.items()
        if (model := _section_model(field.annotation)) is not None
    }
    match keys:
        case (section, key) if section in sections and key in sections[section].model_fields:
            # The models parse strings ("5s", "3", "true", "4MiB"); a list or mapping is JSON.
            return _json_or_text(sections[section].model_fields[key].annotation, text)
        case (section,) if section in sections:
            example = next(iter(sections[section].model_fields)).upper()
            raise ValueError(f"set one key, e.g. {ENV_PREFIX}{section.upper()}__{example}")
        case (key,) if key in Config.model_fields:
            return _json_or_text(Config.model_fields[key].annotation, text)
    raise ValueError("unknown setting")


def _json_or_text(annotation: object, text: str) -> object:
    """`text` parsed as JSON for a list or a mapping (ValueError if it is not one), else as is."""
    shape = get_origin(annotation)
    if shape is list:
        items = load_json(text)
        if not isinstance(items, list):
            raise ValueError(f"must be a JSON list, got {describe(items)}")
        return items
    if shape is dict:
        mapping = load_json(text)
        if not isinstance(mapping, dict):
            raise ValueError(f"must be a JSON object, got {describe(mapping)}")
        return mapping
    return text


def _section_model(annotation: object) -> type[BaseModel] | None:
    """The model of a section, also of an optional one (``targets_http``); None for a list or
    a scalar."""
    optional = get_origin(annotation) in (Union, UnionType)
    for candidate in get_args(annotation) if optional else (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _beside(config_file: Path, glob: str) -> str:
    """A ``targets_files`` glob, relative ones taken from the configuration file's directory."""
    if Path(glob).expanduser().is_absolute():
        return glob
    return str(config_file.absolute().parent / glob)


def _resolve_state_path(path: Path, environ: Mapping[str, str]) -> Path:
    if path.is_absolute():
        return path
    # systemd joins several StateDirectory= entries with ':'; the first is ours.
    state_directory = environ.get(STATE_DIRECTORY_ENV, "").split(":")[0]
    if state_directory:
        return Path(state_directory) / path
    return Path.cwd() / path
