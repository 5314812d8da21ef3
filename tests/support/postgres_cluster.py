"""The test session's private PostgreSQL server: ``probe.testing.postgres``, skipped without one.

The cluster lives for the test session; every test gets a database of its own. Without a
server the tests are skipped, or fail under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

# Re-exported (``as``): the suites import them from here, beside `session_cluster`.
from probe.testing.postgres import ROLE_PASSWORD as ROLE_PASSWORD
from probe.testing.postgres import Database as Database
from probe.testing.postgres import PostgresCluster as PostgresCluster
from probe.testing.postgres import missing_reason as missing_reason
from probe.testing.postgres import server_binaries as server_binaries


@contextlib.contextmanager
def session_cluster() -> Iterator[PostgresCluster]:
    """The session's cluster; without a server the tests are skipped, or fail under CI=true."""
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs a PostgreSQL server: {reason}", pytrace=False)
        pytest.skip(reason)
    with PostgresCluster.running() as cluster:
        yield cluster
