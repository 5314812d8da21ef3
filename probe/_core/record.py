"""The Job record: a Job resource plus the state the daemon keeps for it, stored together."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from probe._core.causes import NOTHING_SEEN, CausesSeen, RootCause
from probe._core.model import Job, from_epoch, replace_model
from probe._core.restarts import RestartLedger


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A Job resource plus the state the daemon keeps for it (stored together)."""

    job: Job
    ledger: RestartLedger = field(default_factory=RestartLedger)
    missing_probes: int = 0
    """Consecutive probes that found the (seen) job gone; reset when it is found."""
    last_probe_at: float | None = None
    """When the last probe of the Job ended (also for Jobs without ``status.started``): the
    Job's ``lastUpdateTime`` as shown, kept apart so a quiet probe copies no model."""
    causes: tuple[RootCause, ...] = ()
    """Root causes Flink reported that no JOB_RESTARTED event carries yet, oldest first."""
    causes_seen: CausesSeen = NOTHING_SEEN
    """Which of Flink's exception-history entries were taken already."""

    @property
    def probing(self) -> bool:
        """Whether the scheduler still probes this Job (not final, or its count settling)."""
        if not self.job.state.is_final:
            return True
        return self.ledger.terminal_seen_at is not None and not self.ledger.settled

    @property
    def shown_job(self) -> Job:
        """The Job as served and stored: ``lastUpdateTime`` is the last probe's time."""
        job = self.job
        started = job.status.started
        if started is None or self.last_probe_at is None:
            return job
        probed = from_epoch(self.last_probe_at)
        if started.last_update_time == probed:
            return job
        started = replace_model(started, last_update_time=probed)
        return replace_model(job, status=replace_model(job.status, started=started))

    def to_document(self) -> str:
        # The Job is serialised by pydantic-core straight to JSON, not through a dict and the
        # json module: every stored change of every Job goes through here.
        rest = json.dumps(
            {
                "ledger": self.ledger.to_dict(),
                "missingProbes": self.missing_probes,
                "lastProbeAt": self.last_probe_at,
                "causes": [cause.to_dict() for cause in self.causes],
                "causesSeen": self.causes_seen.to_dict(),
            },
            separators=(",", ":"),
        )
        return '{"job":' + self.shown_job.model_dump_json(by_alias=True) + "," + rest[1:]

    @classmethod
    def from_document(cls, text: str) -> Self:
        # One pass of pydantic-core over the text: every stored Job is loaded before the
        # daemon is ready.
        document = _Document.model_validate_json(text)
        return cls(
            job=document.job,
            ledger=RestartLedger.from_dict(document.ledger),
            missing_probes=document.missing_probes,
            last_probe_at=document.last_probe_at,
            causes=tuple(RootCause.from_dict(cause) for cause in document.causes),
            causes_seen=(
                NOTHING_SEEN
                if document.causes_seen is None
                else CausesSeen.from_dict(document.causes_seen)
            ),
        )


class _Document(BaseModel):
    """A stored record, as `JobRecord.to_document` writes it."""

    model_config = ConfigDict(frozen=True)

    job: Job
    ledger: dict[str, Any]
    missing_probes: int = Field(alias="missingProbes")
    last_probe_at: float | None = Field(alias="lastProbeAt")
    # Absent from records stored before events existed.
    causes: list[dict[str, Any]] = Field(default_factory=list)
    causes_seen: dict[str, Any] | None = Field(default=None, alias="causesSeen")
