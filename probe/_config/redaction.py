"""The effective configuration as data and YAML, secrets replaced (``check-config``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

import yaml

from probe._config.errors import REDACTED

if TYPE_CHECKING:
    from probe._config.config import Config

__all__ = ["dump_effective", "redact_url", "redacted_dict"]

REDACTED_PASSWORD: Final = "***"


def redact_url(url: str) -> str:
    """`url` with the password of its user part, if any, replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:{REDACTED_PASSWORD}"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def redacted_dict(config: Config) -> dict[str, Any]:
    """The configuration as plain data (durations as ``10s``), secrets replaced."""
    data = config.model_dump(mode="json")
    for target in data["targets"]:
        target["url"] = redact_url(target["url"])
        target["headers"] = dict.fromkeys(target["headers"], REDACTED)
    if data["targets_http"] is not None:
        data["targets_http"]["url"] = redact_url(data["targets_http"]["url"])
    return data


def dump_effective(config: Config) -> str:
    """YAML of `redacted_dict`, in the file's key order; loads back as a config file."""
    return yaml.safe_dump(redacted_dict(config), sort_keys=False, allow_unicode=True)
