"""Durable state behind one small interface (``Store``): SQLite embedded, PostgreSQL shared."""

from __future__ import annotations

from pathlib import Path

from probe._store.base import (
    Changes,
    EventQuery,
    FencedOut,
    Lease,
    Store,
    StoredEvent,
    StoredJob,
    StoreError,
    default_instance,
)
from probe._store.sqlite import SQLiteStore

__all__ = [
    "Changes",
    "EventQuery",
    "FencedOut",
    "Lease",
    "Store",
    "StoreError",
    "StoredEvent",
    "StoredJob",
    "open_store",
]


def open_store(
    location: Path | str, *, password: str | None = None, instance: str | None = None
) -> Store:
    """The store at ``location``: a path or ``sqlite:///path`` (the SQLite file), or a
    ``postgresql://`` URL (the shared database; ``password`` unless libpq finds one).

    ``instance`` names this daemon in leases (default: host name and process id).
    """
    if isinstance(location, Path):
        return SQLiteStore.open(location)
    scheme, separator, rest = location.partition("://")
    if not separator:
        return SQLiteStore.open(Path(location))
    if scheme in ("postgresql", "postgres"):
        # psycopg and libpq cost memory that a daemon on SQLite need not carry.
        from probe._store.postgres import PostgresStore

        return PostgresStore.open(
            location, instance=instance or default_instance(), password=password
        )
    if scheme == "sqlite":
        if not rest.startswith("/"):
            raise StoreError(f"state.url {location}: write a SQLite file as sqlite:///path")
        return SQLiteStore.open(Path(rest))
    raise StoreError(
        f"state.url {location}: unknown scheme {scheme!r}; use sqlite:///path"
        " or postgresql://user@host:port/dbname"
    )
