"""Where Jobs come from: the static ``jobs:`` of the configuration (discovery lives in the
scheduler, since it reads the overview of each round).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from probe._cogs.logs import get_logger
from probe._config import JobConfig
from probe._core.model import SOURCE_CONFIG, new_job
from probe._core.record import JobRecord

log = get_logger("flink_probe.sources")


def job_spec(job: JobConfig) -> dict[str, Any]:
    """The Job's spec: the configured spec plus the target it runs on."""
    return {**job.spec, "target": job.target}


def declare_static_jobs(
    declared: Iterable[JobConfig], known: Callable[[str], JobRecord | None], now: datetime
) -> list[JobRecord]:
    """New STARTING Jobs for declared ids the daemon does not know yet.

    A Job's spec is immutable: a declaration that differs from the stored Job (spec, target,
    namespace or deployment) is refused with a logged error and the stored Job stays as is.
    """
    created = []
    for job in declared:
        existing = known(job.id)
        if existing is None:
            created.append(
                JobRecord(
                    new_job(
                        job_id=job.id,
                        namespace=job.namespace,
                        deployment_name=job.deployment,
                        target=job.target,
                        source=SOURCE_CONFIG,
                        spec=job_spec(job),
                        now=now,
                    )
                )
            )
            continue
        meta = existing.job.metadata
        offered = (job_spec(job), job.namespace, job.deployment)
        stored = (existing.job.spec, meta.namespace, meta.deployment_name)
        if offered != stored:
            log.error(
                "declared job differs from the stored Job; a Job's spec never changes, "
                "keeping the stored one",
                job_id=job.id,
                stored_spec=existing.job.spec,
                declared_spec=offered[0],
            )
    return created
