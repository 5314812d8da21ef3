"""One name space for the targets of every source: configuration, files, HTTP and enrollment.

Each name and each URL belongs to one target. On a conflict the stronger source keeps it, in
the order of `SOURCES` (configuration first); the weaker target is left out and the conflict
reported as a `Rejection`, to log and count once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from probe._config.discovery import ProfileConfig, choose_profile
from probe._config.models import METRICS_MAX_AGE_MARGIN, TargetConfig
from probe._targets.discovered import SOURCES, DiscoveredTarget, Source

__all__ = ["EffectiveTarget", "Rejection", "TargetSet", "merge_targets"]

_UNSECURED: Final = TargetConfig(name="discovered", url="http://discovered.invalid/")
"""What a target without a profile is built from: no credentials, the system's CAs."""


@dataclass(frozen=True, slots=True)
class EffectiveTarget:
    """A target that is probed: where it was declared, and the settings it is probed with."""

    declared: DiscoveredTarget
    config: TargetConfig
    """The configured target itself, or one built for a dynamic one (discovery on, the
    profile's credentials and TLS, `metrics_max_age` from ``probe.interval``)."""

    @property
    def source(self) -> Source:
        return self.declared.source


@dataclass(frozen=True, slots=True)
class Rejection:
    """A dynamic target left out, and why, in one line."""

    target: DiscoveredTarget
    reason: str

    @property
    def source(self) -> Source:
        return self.target.source

    @property
    def message(self) -> str:
        kind = self.target.source
        return f"{kind} target {self.target.name!r} ({self.target.url}) left out: {self.reason}"


@dataclass(frozen=True, slots=True)
class TargetSet:
    """The effective targets by name (strongest source first), and the rejected ones."""

    targets: Mapping[str, EffectiveTarget]
    rejected: frozenset[Rejection]
    _urls: Mapping[str, EffectiveTarget]

    def by_name(self, name: str) -> DiscoveredTarget | None:
        found = self.targets.get(name)
        return None if found is None else found.declared

    def by_url(self, url: str) -> DiscoveredTarget | None:
        """The target probing a normalised URL (the first configured one, if several are)."""
        found = self._urls.get(url)
        return None if found is None else found.declared

    def counts(self) -> dict[Source, int]:
        """Targets by source, every source named: ``flink_probe_targets{source}``."""
        counted = Counter(target.source for target in self.targets.values())
        return {source: counted[source] for source in SOURCES}

    def new_rejections(self, previous: TargetSet | None) -> list[Rejection]:
        """The rejections `previous` did not have: each conflict is logged and counted once."""
        before = frozenset() if previous is None else previous.rejected
        return sorted(self.rejected - before, key=lambda r: (r.target.name, r.target.url))


def merge_targets(
    configured: Sequence[TargetConfig],
    discovered: Iterable[DiscoveredTarget],
    profiles: Mapping[str, ProfileConfig],
    interval: float,
) -> TargetSet:
    """The targets to probe: every configured one, then each dynamic one whose name and URL
    are still free (sources in the order of `SOURCES`, a source's targets in their order).

    `interval` is ``probe.interval``, which sets a dynamic target's `metrics_max_age`.
    """
    targets: dict[str, EffectiveTarget] = {}
    urls: dict[str, EffectiveTarget] = {}
    for config in configured:
        declared = DiscoveredTarget(config.name, config.url, config.namespace, source="config")
        targets[config.name] = urls.setdefault(config.url, EffectiveTarget(declared, config))
    rejected = []
    rank = {source: index for index, source in enumerate(SOURCES)}
    for target in sorted(discovered, key=lambda t: rank[t.source]):
        holder = targets.get(target.name) or urls.get(target.url)
        if holder is not None:
            rejected.append(Rejection(target, _conflict(target, holder.declared)))
            continue
        try:
            profile = choose_profile(profiles, target.profile, target.url)
        except ValueError as error:
            rejected.append(Rejection(target, str(error)))
            continue
        effective = EffectiveTarget(target, _settings(target, profile, interval))
        targets[target.name] = urls[target.url] = effective
    return TargetSet(MappingProxyType(targets), frozenset(rejected), MappingProxyType(urls))


def _conflict(target: DiscoveredTarget, holder: DiscoveredTarget) -> str:
    what = "name" if holder.name == target.name else "URL"
    return f"its {what} is the {holder.source} target {holder.name!r}'s ({holder.url})"


def _settings(
    target: DiscoveredTarget, profile: ProfileConfig | None, interval: float
) -> TargetConfig:
    template = _UNSECURED if profile is None else profile.template
    metrics_max_age = interval + METRICS_MAX_AGE_MARGIN
    if profile is not None and profile.metrics_max_age is not None:
        metrics_max_age = profile.metrics_max_age
    # Not validated again: every field was checked where it was declared, and the profile's
    # secrets were read when the configuration was loaded.
    return template.model_copy(
        update={
            "name": target.name,
            "url": target.url,
            "namespace": target.namespace,
            "discover": True,
            "metrics_max_age": metrics_max_age,
        }
    )
