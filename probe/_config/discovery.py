"""Settings of the targets that come and go: file_sd and http_sd sources, and ``/probe``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)

from probe._config.models import (
    BasicAuthConfig,
    EnvName,
    FilePath,
    Name,
    TargetConfig,
    TlsConfig,
    _name,
    _normalise_url,
    _off,
    _Section,
)
from probe._config.redaction import redact_url
from probe._config.units import Duration, PositiveDuration
from probe._core.restarts import DEFAULT_MAX_CLOCK_SKEW

__all__ = [
    "DEFAULT_FIRST_WAIT",
    "DEFAULT_MAX_TARGETS",
    "DEFAULT_TARGETS_REFRESH",
    "DEFAULT_TTL",
    "EnrollmentConfig",
    "ProfileConfig",
    "TargetsGlob",
    "TargetsHttpConfig",
    "check_name",
    "choose_profile",
    "target_url",
]

DEFAULT_TARGETS_REFRESH: Final = 30.0
"""``targets_refresh``: how often targets files are read when no change is noticed."""
DEFAULT_TTL: Final = 600.0
DEFAULT_FIRST_WAIT: Final = 2.0
DEFAULT_MAX_TARGETS: Final = 1000


def check_name(value: str) -> str:
    """`value` if it may name a target or a namespace; ValueError of one line if not."""
    _name(value)
    return value


def target_url(text: str) -> str:
    """A target's URL as a dynamic source gives it (``host:port`` means http), normalised as a
    configured target's; ValueError of one line, never quoting a password."""
    text = text.strip()
    if "://" not in text:
        text = f"http://{text}"
    if urlsplit(text).username is not None:
        # Dynamic targets take credentials from enrollment.profiles only.
        raise ValueError(f"must not carry credentials, got {redact_url(text)!r}: use a profile")
    return _normalise_url(text)


def _targets_glob(value: str) -> str:
    if not value.lower().endswith((".json", ".yml", ".yaml")):
        raise ValueError(f"must end with .json, .yml or .yaml (as in Prometheus), got {value!r}")
    return value


TargetsGlob = Annotated[str, AfterValidator(_targets_glob)]
"""An entry of ``targets_files``: a path or a glob (``*``, ``?``, ``[...]``, ``**``) of
Prometheus file_sd files."""


def _sd_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host, got {redact_url(url)!r}")
    return url.strip()


class TargetsHttpConfig(_Section):
    """``targets_http``: Prometheus http_sd, a JSON list of target groups fetched with GET."""

    url: Annotated[str, AfterValidator(_sd_url)]
    """May carry a query (it is sent as is); redacted in `dump_effective` like a target's."""
    refresh: PositiveDuration = DEFAULT_TARGETS_REFRESH
    """How often the list is fetched; a failed fetch keeps the last good list."""


def _compile(value: object) -> object:
    if isinstance(value, str):
        try:
            return re.compile(value)
        except re.error as error:
            raise ValueError(f"invalid regular expression: {error}") from None
    return value


def _pattern_text(pattern: re.Pattern[str]) -> str:
    return pattern.pattern


AllowPattern = Annotated[
    re.Pattern[str],
    BeforeValidator(_compile),
    PlainSerializer(_pattern_text, return_type=str),
]
"""A regular expression that a whole URL must match (anchored at both ends)."""


class ProfileConfig(_Section):
    """Credentials and TLS of enrolled or discovered targets, as a configured target takes
    them; chosen by name (``&profile=`` or the ``profile`` label), never sent in a URL."""

    tls: TlsConfig | None = None
    """HTTPS settings; a target using the profile must have an https URL."""
    basic_auth: BasicAuthConfig | None = None
    bearer_token_file: FilePath | None = None
    bearer_token_env: EnvName | None = None
    overview_max_age: Duration | None = None
    """As a target's; None: a target's default."""
    metrics_max_age: Duration | None = None
    """As a target's; None: ``probe.interval`` plus Flink's default metric fetcher interval."""
    max_clock_skew: Annotated[Duration | None, BeforeValidator(_off)] = DEFAULT_MAX_CLOCK_SKEW
    _template: TargetConfig = PrivateAttr()

    inline_secret = "bearer_token"

    @model_validator(mode="after")
    def _as_target(self, info: ValidationInfo) -> ProfileConfig:
        # A target's own validation reads the token and refuses two kinds of credentials.
        settings: dict[str, Any] = {
            key: getattr(self, key)
            for key in self.model_fields_set
            if getattr(self, key) is not None or key == "max_clock_skew"  # None: off
        }
        self._template = TargetConfig.model_validate(
            {"name": "profile", "url": "https://profile.invalid/", **settings},
            context=info.context,
        )
        return self

    @property
    def template(self) -> TargetConfig:
        """A target with this profile's security and a placeholder name and URL."""
        return self._template


class EnrollmentConfig(_Section):
    """``enrollment``: which URLs a scrape of ``/probe?target=`` may enroll, and their limits.

    Off (every URL refused) until `allow` lists a pattern: an open ``/probe`` would let anyone
    who reaches the daemon make it send requests anywhere.
    """

    allow: list[AllowPattern] = Field(default_factory=list)
    """A URL is enrolled only if one of these matches it whole (as given, or as normalised)."""
    ttl: PositiveDuration = DEFAULT_TTL
    """A target not scraped for this long is retired (its Jobs stay, not made final)."""
    first_wait: Duration = DEFAULT_FIRST_WAIT
    """How long the first scrape of a new target waits for its first round."""
    max_targets: int = Field(default=DEFAULT_MAX_TARGETS, ge=1)
    """Enrolled targets at most; a new URL past it is refused (429)."""
    profiles: dict[Name, ProfileConfig] = Field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.allow)

    def allows(self, url: str, given: str) -> bool:
        """Whether a pattern matches the normalised `url` or the text it was `given` as."""
        return any(
            pattern.fullmatch(url) or pattern.fullmatch(given.strip()) for pattern in self.allow
        )


def choose_profile(
    profiles: Mapping[str, ProfileConfig], name: str | None, url: str
) -> ProfileConfig | None:
    """The profile `name` (None: none) for a target at `url`; ValueError of one line."""
    if name is None:
        return None
    profile = profiles.get(name)
    if profile is None:
        known = ", ".join(sorted(profiles)) or "none"
        raise ValueError(f"unknown profile {name!r} (configured: {known})")
    if profile.tls is not None and not url.startswith("https:"):
        raise ValueError(f"profile {name!r} sets tls, which needs an https URL, got {url!r}")
    return profile
