"""Durable state behind one small interface (``Store``); SQLite is the embedded backend."""

from __future__ import annotations

from pathlib import Path

from probe._store.base import Store, StoredJob, StoreError
from probe._store.sqlite import SQLiteStore

__all__ = ["Store", "StoreError", "StoredJob", "open_store"]


def open_store(path: Path) -> Store:
    """The store the daemon uses for ``state.path``."""
    return SQLiteStore.open(path)
