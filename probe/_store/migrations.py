"""The schema's history, one list for both backends: step i brings a store from version i to i + 1.

Append, never edit: stores in the field are at every version ever released. Each step is the
same change written for each engine; a backend runs the statements of its own column, all of
one step in one transaction, and records the new version with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Written to the SQLite header by step 1 ("FLKP"), so a database of another program that
# happens to sit at state.path is recognised and refused instead of migrated.
SQLITE_APPLICATION_ID: Final = 0x464C4B50


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema, as statements for each backend."""

    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        sqlite=(
            """
            CREATE TABLE jobs (
                job_id TEXT PRIMARY KEY,
                namespace TEXT NOT NULL,
                state TEXT NOT NULL,
                resource_version INTEGER NOT NULL,
                document TEXT NOT NULL
            )
            """,
            f"PRAGMA application_id = {SQLITE_APPLICATION_ID}",
        ),
        postgres=(
            """
            CREATE TABLE jobs (
                job_id text PRIMARY KEY,
                namespace text NOT NULL,
                state text NOT NULL,
                resource_version bigint NOT NULL,
                document text NOT NULL
            )
            """,
        ),
    ),
    # Version 2: each Job's target and restart lower bound as columns (a new lease holder
    # loads its target's Jobs; a stored count never goes down), and the leases.
    Migration(
        sqlite=(
            "ALTER TABLE jobs ADD COLUMN target TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE jobs ADD COLUMN observed INTEGER NOT NULL DEFAULT 0",
            """
            UPDATE jobs SET
                target = coalesce(
                    json_extract(document, '$.job.metadata.annotations."flink-probe/target"'), ''
                ),
                observed = coalesce(json_extract(document, '$.ledger.observed'), 0)
            WHERE json_valid(document)
            """,
            "CREATE INDEX jobs_by_target ON jobs (target)",
            # The single owner of the file holds every lease: they live in its memory.
        ),
        postgres=(
            # No PostgreSQL store ever held rows at version 1: nothing to fill in.
            """
            ALTER TABLE jobs
                ADD COLUMN target text NOT NULL DEFAULT '',
                ADD COLUMN observed bigint NOT NULL DEFAULT 0
            """,
            "CREATE INDEX jobs_by_target ON jobs (target)",
            "CREATE SEQUENCE lease_tokens",
            """
            CREATE TABLE leases (
                target text PRIMARY KEY,
                holder text NOT NULL,
                token bigint NOT NULL,
                expires_at timestamptz NOT NULL
            )
            """,
            """
            CREATE TABLE instances (
                instance text PRIMARY KEY,
                targets text[] NOT NULL,
                expires_at timestamptz NOT NULL
            )
            """,
        ),
    ),
    # Version 3: the store-wide sequence of commits (every Job row and event carries the
    # number of the commit that wrote it: watches resume after a number), and the events.
    Migration(
        sqlite=(
            "ALTER TABLE jobs ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
            "UPDATE jobs SET seq = rowid",
            "CREATE INDEX jobs_by_seq ON jobs (seq)",
            "CREATE TABLE sequence (value INTEGER NOT NULL)",
            "INSERT INTO sequence SELECT coalesce(max(seq), 0) FROM jobs",
            """
            CREATE TABLE events (
                seq INTEGER PRIMARY KEY,
                event_id TEXT NOT NULL UNIQUE,
                namespace TEXT NOT NULL,
                job_id TEXT,
                deployment_name TEXT,
                reason TEXT NOT NULL,
                created_at REAL NOT NULL,
                target TEXT NOT NULL,
                document TEXT NOT NULL
            )
            """,
            "CREATE INDEX events_by_job ON events (job_id, seq)",
            "CREATE INDEX events_by_namespace ON events (namespace, seq)",
            "CREATE INDEX events_by_time ON events (created_at)",
        ),
        postgres=(
            "ALTER TABLE jobs ADD COLUMN seq bigint NOT NULL DEFAULT 0",
            """
            UPDATE jobs SET seq = numbered.n
            FROM (SELECT job_id, row_number() OVER (ORDER BY job_id) AS n FROM jobs) AS numbered
            WHERE jobs.job_id = numbered.job_id
            """,
            "CREATE INDEX jobs_by_seq ON jobs (seq)",
            "CREATE TABLE sequence (value bigint NOT NULL)",
            "INSERT INTO sequence SELECT coalesce(max(seq), 0) FROM jobs",
            """
            CREATE TABLE events (
                seq bigint PRIMARY KEY,
                event_id text NOT NULL UNIQUE,
                namespace text NOT NULL,
                job_id text,
                deployment_name text,
                reason text NOT NULL,
                created_at double precision NOT NULL,
                target text NOT NULL,
                document text NOT NULL
            )
            """,
            "CREATE INDEX events_by_job ON events (job_id, seq)",
            "CREATE INDEX events_by_namespace ON events (namespace, seq)",
            "CREATE INDEX events_by_time ON events (created_at)",
        ),
    ),
)

SCHEMA_VERSION: Final = len(MIGRATIONS)
