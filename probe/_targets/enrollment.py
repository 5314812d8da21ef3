"""Enrollment through ``GET /probe?target=<url>``: which scrape enrolls what, as decisions.

The registry does no I/O and reads no clock: the caller passes the time, and a refused URL is
never contacted because nothing here contacts anything. Each call returns one `Decision`: the
target to answer for, or the refusal and its HTTP status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final, Literal, Protocol

from probe._config.discovery import EnrollmentConfig, check_name, choose_profile, target_url
from probe._targets.discovered import DEFAULT_NAMESPACE, DiscoveredTarget, url_name

__all__ = [
    "STATUS",
    "Decision",
    "EnrollmentRegistry",
    "Outcome",
    "Reason",
    "TargetIndex",
]

Outcome = Literal["enrolled", "known", "refused"]
Reason = Literal["bad_request", "forbidden", "conflict", "full"]
STATUS: Final[Mapping[Reason, int]] = {
    "bad_request": 400,
    "forbidden": 403,
    "conflict": 409,
    "full": 429,
}


@dataclass(frozen=True, slots=True)
class Decision:
    """What a ``/probe`` request gets.

    ``enrolled``: the target is new, or its namespace, deployment or profile changed (its loop
    starts anew; answer after its first round or `wait` seconds). ``known``: it is probed
    already (by enrollment or another source). ``refused``: `reason`, `status` and `message`.
    """

    outcome: Outcome
    status: int
    target: DiscoveredTarget | None = None
    reason: Reason | None = None
    message: str = ""
    """One line for the answer's body and the log; never quotes a password."""
    wait: float = 0.0
    changed: bool = False
    """The registry's targets changed (enrolled, replaced or dropped): merge them again."""


class TargetIndex(Protocol):
    """The targets of every source, by URL and by name (`probe._targets.merge.TargetSet`)."""

    def by_url(self, url: str) -> DiscoveredTarget | None: ...

    def by_name(self, name: str) -> DiscoveredTarget | None: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    target: DiscoveredTarget
    given: str
    """The URL as it was first given (`enrollment.allow` may match it rather than the URL)."""
    scraped_at: float


def _refused(reason: Reason, message: str, *, changed: bool = False) -> Decision:
    return Decision("refused", STATUS[reason], reason=reason, message=message, changed=changed)


class EnrollmentRegistry:
    """The enrolled targets: one per URL, each name held by one URL, `max_targets` at most."""

    def __init__(self, config: EnrollmentConfig) -> None:
        self.config = config
        self._by_url: dict[str, _Entry] = {}
        """Oldest scrape first: a scrape moves its entry to the end."""
        self._by_name: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_url)

    def targets(self) -> tuple[DiscoveredTarget, ...]:
        """The enrolled targets, by name."""
        return tuple(sorted((e.target for e in self._by_url.values()), key=lambda t: t.name))

    def enroll(
        self, query: Mapping[str, str], now: float, others: TargetIndex | None = None
    ) -> Decision:
        """Decide one scrape of ``/probe`` at `now` (seconds) from its parameters ``target``,
        ``namespace``, ``deployment``, ``name`` and ``profile`` (an empty one counts as absent).

        `others` holds the targets of every source: a URL that configuration, a file or HTTP
        declares is answered as that target (no request is sent on the scrape's behalf), and
        their names are taken.
        """
        given = query.get("target", "").strip()
        if not given:
            return _refused("bad_request", "target= is required: the Flink REST URL to probe")
        try:
            url = target_url(given)
        except ValueError as error:
            return _refused("bad_request", f"target: {error}")
        elsewhere = others.by_url(url) if others is not None else None
        if elsewhere is not None and elsewhere.source != "enrolled":
            dropped = self._drop(url) is not None  # superseded by the other source
            return Decision("known", 200, target=elsewhere, changed=dropped)
        if not self.config.allows(url, given):
            if not self.config.enabled:
                return _refused("forbidden", "enrollment is off: enrollment.allow is empty")
            return _refused("forbidden", f"target {url} does not match enrollment.allow")
        try:
            wanted = self._declared(query, url)
        except ValueError as error:
            return _refused("bad_request", str(error))
        entry = self._by_url.get(url)
        if entry is None:
            return self._admit(wanted, given, now, others)
        held = entry.target
        if _taken(others, held.name):
            self._drop(url)
            return _refused(
                "conflict",
                f"name {held.name!r} now belongs to a target of another source",
                changed=True,
            )
        if query.get("name", "").strip() and wanted.name != held.name:
            return _refused("conflict", f"target {url} is enrolled as {held.name!r}: a name stays")
        target = replace(wanted, name=held.name)
        self._drop(url)
        self._hold(_Entry(target, entry.given, now))
        if target == held:
            return Decision("known", 200, target=target)
        return Decision("enrolled", 200, target=target, wait=self.config.first_wait, changed=True)

    def expire(self, now: float) -> tuple[DiscoveredTarget, ...]:
        """Retire the targets not scraped for `enrollment.ttl`; returns them."""
        retired = []
        for url, entry in list(self._by_url.items()):
            if now - entry.scraped_at < self.config.ttl:
                break  # oldest scrape first: the rest are younger
            retired.append(entry.target)
            self._drop(url)
        return tuple(retired)

    def next_expiry(self) -> float | None:
        """When `expire` next retires a target, if nothing is scraped meanwhile."""
        oldest = next(iter(self._by_url.values()), None)
        return None if oldest is None else oldest.scraped_at + self.config.ttl

    def reconfigure(self, config: EnrollmentConfig) -> tuple[DiscoveredTarget, ...]:
        """Apply a reloaded ``enrollment``; returns the targets it no longer admits (retired).

        A smaller `max_targets` retires nothing: it refuses new URLs until there is room.
        """
        self.config = config
        retired = []
        for url, entry in list(self._by_url.items()):
            try:
                choose_profile(config.profiles, entry.target.profile, url)
                admitted = config.allows(url, entry.given)
            except ValueError:
                admitted = False
            if not admitted:
                retired.append(entry.target)
                self._drop(url)
        return tuple(retired)

    def _admit(
        self, wanted: DiscoveredTarget, given: str, now: float, others: TargetIndex | None
    ) -> Decision:
        holder = self._by_name.get(wanted.name)
        if holder is not None or _taken(others, wanted.name):
            owner = f"target {holder}" if holder is not None else "a target of another source"
            return _refused(
                "conflict", f"name {wanted.name!r} is taken by {owner}: choose another with name="
            )
        if len(self._by_url) >= self.config.max_targets:
            return _refused(
                "full", f"enrollment.max_targets ({self.config.max_targets}) targets are enrolled"
            )
        self._hold(_Entry(wanted, given, now))
        return Decision("enrolled", 200, target=wanted, wait=self.config.first_wait, changed=True)

    def _declared(self, query: Mapping[str, str], url: str) -> DiscoveredTarget:
        """The target `query` declares for `url`; ValueError of one line if it is wrong."""
        name = _parameter(query, "name", check_name)
        profile = _parameter(query, "profile", check_name)
        try:
            choose_profile(self.config.profiles, profile, url)
        except ValueError as error:
            raise ValueError(f"profile: {error}") from None
        return DiscoveredTarget(
            name=name or url_name(url),
            url=url,
            namespace=_parameter(query, "namespace", check_name) or DEFAULT_NAMESPACE,
            deployment=_parameter(query, "deployment", str),
            profile=profile,
            source="enrolled",
        )

    def _hold(self, entry: _Entry) -> None:
        self._by_url[entry.target.url] = entry
        self._by_name[entry.target.name] = entry.target.url

    def _drop(self, url: str) -> _Entry | None:
        entry = self._by_url.pop(url, None)
        if entry is not None:
            del self._by_name[entry.target.name]
        return entry


def _taken(others: TargetIndex | None, name: str) -> bool:
    """Whether another source's target has `name` (an enrolled one would be this registry's)."""
    other = others.by_name(name) if others is not None else None
    return other is not None and other.source != "enrolled"


def _parameter(query: Mapping[str, str], key: str, check: Callable[[str], str]) -> str | None:
    value = query.get(key, "").strip()
    if not value:
        return None
    try:
        return check(value)
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from None
