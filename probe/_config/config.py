"""The whole configuration: its sections, the targets that come and go, and their cross-checks."""

from __future__ import annotations

from typing import Final

from pydantic import Field, model_validator

from probe._config.discovery import (
    DEFAULT_TARGETS_REFRESH,
    EnrollmentConfig,
    TargetsGlob,
    TargetsHttpConfig,
)
from probe._config.errors import Problem, located_error
from probe._config.models import (
    METRICS_MAX_AGE_MARGIN,
    EventsConfig,
    JobConfig,
    LoggingConfig,
    ProbeConfig,
    ServerConfig,
    StateConfig,
    TargetConfig,
    _Section,
)
from probe._config.units import PositiveDuration, format_duration

__all__ = ["LEASE_TTL_INTERVALS", "MIN_LEASE_TTL_INTERVALS", "Config"]

LEASE_TTL_INTERVALS: Final = 3
"""`state.lease_ttl` defaults to this many probe intervals: two renewals may fail in a row."""
MIN_LEASE_TTL_INTERVALS: Final = 2
"""A lease must outlive the round that renews it, with one interval to spare."""


class Config(_Section):
    """The whole configuration; build it with `load_config`, which also resolves ``state.path``
    and ``targets_files``."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    targets: list[TargetConfig] = Field(default_factory=list)
    jobs: list[JobConfig] = Field(default_factory=list)
    targets_files: list[TargetsGlob] = Field(default_factory=list)
    """Prometheus file_sd files; `load_config` resolves a relative glob against the file's
    directory."""
    targets_refresh: PositiveDuration = DEFAULT_TARGETS_REFRESH
    """How often the targets files are read when no change is noticed."""
    targets_http: TargetsHttpConfig | None = None
    enrollment: EnrollmentConfig = Field(default_factory=EnrollmentConfig)

    @model_validator(mode="after")
    def _cross_check(self) -> Config:
        problems: list[Problem] = []
        target_index: dict[str, int] = {}
        for index, target in enumerate(self.targets):
            if target.name in target_index:
                first = target_index[target.name]
                message = f"duplicate target name {target.name!r} (also targets[{first}])"
                problems.append((("targets", index, "name"), message, target.name))
            target_index.setdefault(target.name, index)
        declared = ", ".join(target_index) or "none"
        job_index: dict[str, int] = {}
        for index, job in enumerate(self.jobs):
            if job.target not in target_index:
                message = f"unknown target {job.target!r} (declared: {declared})"
                problems.append((("jobs", index, "target"), message, job.target))
            if job.id in job_index:
                message = f"duplicate job id {job.id!r} (also jobs[{job_index[job.id]}])"
                problems.append((("jobs", index, "id"), message, job.id))
            job_index.setdefault(job.id, index)
        problems += self._lease_ttl_problems()
        if problems:
            raise located_error(self, problems)
        metrics_max_age = self.probe.interval + METRICS_MAX_AGE_MARGIN
        resolved = [
            target
            if "metrics_max_age" in target.model_fields_set
            else target.model_copy(update={"metrics_max_age": metrics_max_age})
            for target in self.targets
        ]
        # The model is frozen; this runs once, while it is being built.
        object.__setattr__(self, "targets", resolved)
        if self.state.lease_ttl is None:
            ttl = LEASE_TTL_INTERVALS * self.probe.interval
            object.__setattr__(self, "state", self.state.model_copy(update={"lease_ttl": ttl}))
        return self

    def _lease_ttl_problems(self) -> list[Problem]:
        ttl, interval = self.state.lease_ttl, self.probe.interval
        if ttl is None or ttl >= MIN_LEASE_TTL_INTERVALS * interval:
            return []
        message = (
            f"must be at least {MIN_LEASE_TTL_INTERVALS} x probe.interval"
            f" ({format_duration(ttl)} < {format_duration(MIN_LEASE_TTL_INTERVALS * interval)})"
        )
        return [(("state", "lease_ttl"), message, ttl)]
