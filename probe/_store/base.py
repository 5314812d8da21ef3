"""What the daemon needs of a store: load every Job, write a batch atomically, close."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredJob:
    """One Job as the store keeps it; ``document`` is opaque JSON text."""

    job_id: str  # dashed UUID, primary key
    namespace: str
    state: str  # the Job's JobState value, for queries and debugging
    resource_version: int  # grows with every change of the Job
    document: str  # the Job plus its restart-accounting state


class StoreError(Exception):
    """A failure of the store; ``str()`` is one line meant for the user."""


class Store(Protocol):
    """The operations the book and the daemon use; a backend is one module implementing them."""

    def load(self) -> list[StoredJob]:
        """Every stored Job."""
        ...

    def write_batch(self, jobs: Sequence[StoredJob]) -> None:
        """Upsert ``jobs`` in one transaction: all of them are durable, or none is."""
        ...

    def close(self) -> None:
        """Release the file; the store cannot be used afterwards."""
        ...
