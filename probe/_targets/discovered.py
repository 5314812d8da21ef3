"""A target declared by a dynamic source, and the name a URL gets when none is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

__all__ = ["DEFAULT_NAMESPACE", "SOURCES", "DiscoveredTarget", "Source", "url_name"]

Source = Literal["config", "file", "http", "enrolled"]
SOURCES: Final[tuple[Source, ...]] = ("config", "file", "http", "enrolled")
"""Every source, the strongest first: on a conflict of names or URLs the earlier one wins."""
DEFAULT_NAMESPACE: Final = "default"

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class DiscoveredTarget:
    """A Flink REST endpoint a source declares; every field is checked where it is parsed."""

    name: str
    url: str
    """Normalised, as a configured target's (``probe._config.discovery.target_url``)."""
    namespace: str = DEFAULT_NAMESPACE
    """Namespace of the Jobs discovered on the target."""
    deployment: str | None = None
    """Deployment name of those Jobs (None: each Flink job's own name)."""
    profile: str | None = None
    """The ``enrollment.profiles`` entry with its credentials and TLS (None: none)."""
    source: Source = "file"


def url_name(url: str) -> str:
    """The name of a normalised URL without one: ``host:port``, then its path, if any.

    The same URL always gets the same name; distinct URLs only share one when they differ in
    nothing but the scheme or the case of the host.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    return f"{host}:{port}{parts.path.rstrip('/')}"
