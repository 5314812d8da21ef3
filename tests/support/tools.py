"""The command-line tools some tests run (promtool, hadolint, systemd-analyze, flink-probe)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI") == "true"
TOOL_TIMEOUT = 60.0


def missing(what: str, install: str) -> None:
    """Skip locally; fail in CI, where every tool must have been installed."""
    message = f"{what} is not available ({install})"
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {message}", pytrace=False)
    pytest.skip(message)


def tool(name: str, install: str) -> str:
    """The path of an executable, from PATH or next to this interpreter (the venv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        missing(name, install)
        raise AssertionError("unreachable")  # missing() always raises
    return found


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=TOOL_TIMEOUT, cwd=cwd, check=False
    )


def promtool() -> str:
    return tool("promtool", "apt-get install prometheus")


def flink_probe_executable() -> Path:
    found = shutil.which("flink-probe", path=str(Path(sys.executable).parent))
    assert found, "flink-probe is not installed in this environment (pip install -e .)"
    return Path(found)
