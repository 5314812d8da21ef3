"""Compile `java/flinkprobe/TestJob.java` against a FLINK_HOME into a runnable jar, cached.

The jar lands in `<flink cache>/testjob-<flink version>-<source digest>/flinkprobe-testjob.jar`,
so it is compiled once per Flink version and source change, not once per test or session.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .cluster import FlinkCluster
from .flinkdist import cache_root

SOURCE: Final = Path(__file__).parent / "java" / "flinkprobe" / "TestJob.java"
MAIN_CLASS: Final = "flinkprobe.TestJob"
JAR_NAME: Final = "flinkprobe-testjob.jar"
_COMPILE_TIMEOUT_S: Final = 300.0


class JobJarBuildError(RuntimeError):
    """javac or jar failed; the message carries their output."""


@dataclass(frozen=True)
class FlinkWithTestJob:
    """A running cluster with the test-job jar uploaded: what the real-Flink tests get."""

    cluster: FlinkCluster
    jar_id: str

    def submit(self, mode: str, *args: str | int) -> str:
        """Run the test job in `mode` (restart, finish, fail, exhaust, forever, slowcancel);
        returns the Flink job id. The job is named `flinkprobe-<mode>`."""
        return self.cluster.run_jar(self.jar_id, [mode, *map(str, args)])


def build_test_job(flink_home: Path, version: str) -> Path:
    """Return the test-job jar compiled against `flink_home` (Flink `version`)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out_dir = cache_root() / f"testjob-{version}-{digest}"
    jar = out_dir / JAR_NAME
    if jar.is_file():
        return jar
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".testjob-{version}-", dir=out_dir.parent))
    try:
        classes = staging / "classes"
        classes.mkdir()
        _run(
            [
                "javac",
                "--release",
                "17",
                "-Xlint:all",
                "-cp",
                f"{flink_home / 'lib'}/*",
                "-d",
                str(classes),
                str(SOURCE),
            ]
        )
        built = staging / JAR_NAME
        _run(["jar", "cfe", str(built), MAIN_CLASS, "-C", str(classes), "."])
        out_dir.mkdir(exist_ok=True)
        # Atomic: a concurrent build of the same source writes the same bytes.
        built.replace(jar)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return jar


def _run(command: list[str]) -> None:
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S, check=False
    )
    if completed.returncode != 0:
        raise JobJarBuildError(
            f"`{' '.join(command)}` exited {completed.returncode}:\n"
            f"{completed.stdout}{completed.stderr}"
        )
