"""Fetch an Apache Flink distribution (a FLINK_HOME) from PyPI into a cache outside the checkout.

PyPI carries Flink in two distributions: `apache-flink` (a small wheel with `pyflink/bin` and
`pyflink/conf`) and `apache-flink-libraries` (`pyflink/lib`, `opt`, `plugins` and
`bin/bash-java-utils.jar`). For 2.x the libraries come as a wheel; for 1.20.x only as an sdist
whose `deps/` folder holds the same files. Unpacking both into one folder gives a complete
FLINK_HOME. The cache is `$FLINK_PROBE_FLINK_CACHE/flink-<version>` (default
`~/.cache/flink-probe/flink-<version>`).

Run as a script to prefetch (what CI does before the tests):
    python tests/real/flinkdist.py            # every version in FLINK_VERSIONS
    python tests/real/flinkdist.py 2.3.0
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

FLINK_2_VERSION: Final = "2.3.0"
# The newest 1.20.x on PyPI when this was written (`pip index versions apache-flink`).
FLINK_1_20_VERSION: Final = "1.20.5"
FLINK_VERSIONS: Final = (FLINK_2_VERSION, FLINK_1_20_VERSION)

CACHE_ENV: Final = "FLINK_PROBE_FLINK_CACHE"
# Only these top-level folders of `pyflink/` make up a FLINK_HOME; the rest is PyFlink's Python.
_DIST_FOLDERS: Final = frozenset({"bin", "conf", "lib", "opt", "plugins"})
# Written last into a finished FLINK_HOME, so a half-unpacked folder is never taken for one.
_COMPLETE_MARKER: Final = ".flink-probe-complete"
# The `apache-flink` wheel is CPython- and platform-specific, but the scripts and conf we take
# from it are not: pin one wheel so the download does not depend on the running interpreter.
_SCRIPTS_WHEEL_TAGS: Final = (
    "--implementation",
    "cp",
    "--python-version",
    "3.11",
    "--abi",
    "cp311",
    "--platform",
    "manylinux2014_x86_64",
)
_PIP_TIMEOUT_S: Final = 1200.0


class FlinkDownloadError(RuntimeError):
    """The distribution could not be fetched or unpacked; the message says what to do."""


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "flink-probe"


def flink_home(version: str) -> Path:
    """Where the distribution of `version` lives once fetched (it may not exist yet)."""
    return cache_root() / f"flink-{version}"


def is_complete(home: Path) -> bool:
    return (home / _COMPLETE_MARKER).is_file()


def ensure_flink(version: str) -> Path:
    """Return a complete FLINK_HOME for `version`, downloading it on first use.

    Safe when several processes call it at once: a file lock lets one of them download while
    the others wait, and the home appears by an atomic rename, only when complete.
    """
    home = flink_home(version)
    if is_complete(home):
        return home
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / f".flink-{version}.lock"):
        if is_complete(home):
            return home
        staging = Path(tempfile.mkdtemp(prefix=f".flink-{version}-", dir=root))
        try:
            wheels = staging / "downloads"
            unpacked = staging / "home"
            unpacked.mkdir()
            _pip_download(version, wheels)
            for archive in sorted(wheels.iterdir()):
                _unpack_dist_folders(archive, unpacked)
            _check_layout(unpacked, version)
            (unpacked / _COMPLETE_MARKER).write_text(f"{version}\n")
            if home.exists():
                # A leftover without the marker (e.g. an older layout): replace it.
                shutil.rmtree(home)
            unpacked.rename(home)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return home


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _pip_download(version: str, into: Path) -> None:
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(into)]
    commands = [
        [*base, "--only-binary=:all:", *_SCRIPTS_WHEEL_TAGS, f"apache-flink=={version}"],
        # A wheel where there is one (2.x), else the sdist (1.20.x has no libraries wheel).
        [*base, "--prefer-binary", f"apache-flink-libraries=={version}"],
    ]
    for command in commands:
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise FlinkDownloadError(f"{' '.join(command)} timed out") from exc
        if completed.returncode != 0:
            raise FlinkDownloadError(
                f"could not fetch Flink {version} from PyPI: `{' '.join(command)}` exited "
                f"{completed.returncode}:\n{completed.stderr[-3000:]}"
            )


def _unpack_dist_folders(archive: Path, home: Path) -> None:
    if archive.name.endswith(".whl"):
        _unpack_wheel(archive, home)
    elif archive.name.endswith(".tar.gz"):
        _unpack_sdist(archive, home)
    else:
        raise FlinkDownloadError(f"unexpected download {archive.name}")


def _dist_relative_path(parts: tuple[str, ...]) -> Path | None:
    """`bin/flink` for ('bin', 'flink'), None for anything outside the FLINK_HOME folders."""
    if len(parts) < 2 or parts[0] not in _DIST_FOLDERS or ".." in parts:
        return None
    return Path(*parts)


def _unpack_wheel(wheel: Path, home: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            parts = tuple(member.filename.split("/"))
            if member.is_dir() or parts[0] != "pyflink":
                continue
            relative = _dist_relative_path(parts[1:])
            if relative is None:
                continue
            target = home / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)
            # zipfile drops permission bits; the wheel records them in the high 16 bits.
            mode = (member.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode)


def _unpack_sdist(sdist: Path, home: Path) -> None:
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive.getmembers():
            parts = tuple(member.name.split("/"))
            # <name>-<version>/deps/<folder>/... is what the sdist installs as pyflink/<folder>.
            if not member.isfile() or len(parts) < 3 or parts[1] != "deps":
                continue
            relative = _dist_relative_path(parts[2:])
            if relative is None:
                continue
            target = home / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            if source is None:
                continue
            with source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)
            target.chmod(member.mode & 0o777)


def _check_layout(home: Path, version: str) -> None:
    for script in ("jobmanager.sh", "taskmanager.sh", "config.sh", "flink"):
        path = home / "bin" / script
        if not path.is_file():
            raise FlinkDownloadError(f"Flink {version} from PyPI has no bin/{script}")
        path.chmod(0o755)
    if not list((home / "lib").glob("flink-dist*.jar")):
        raise FlinkDownloadError(f"Flink {version} from PyPI has no lib/flink-dist*.jar")


def main(argv: list[str]) -> int:
    for version in argv or FLINK_VERSIONS:
        print(ensure_flink(version))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
