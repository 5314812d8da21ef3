"""Which daemon code is measured: the working tree, ``probe/`` of a commit (``--code REV``), or
a directory holding a ``probe/`` (``--code DIR``: a commit with a patch applied, say).

A commit's ``probe/`` is extracted with ``git archive`` (read-only for the repository) into the
bench's temporary directory and put ahead of the working tree on the daemon's ``PYTHONPATH``:
before/after figures of an optimisation come from one command each, on the same machine.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _git(*command: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), *command], capture_output=True, text=True, check=False
    )
    # rstrip only: `git status --porcelain` lines start with a meaningful space.
    return done.stdout.rstrip() if done.returncode == 0 else ""


def extract(revision: str, into: Path) -> Path:
    """``probe/`` as of ``revision``, under ``into`` (or ``revision`` itself, a directory with
    a ``probe/``); returns the directory to import from."""
    if (Path(revision) / "probe").is_dir():
        return Path(revision).resolve()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "probe"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {revision}: {archive.stderr.decode().strip()}")
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def digest(code: Path | None) -> str:
    """A short digest of every ``probe/**/*.py``: tells two measured versions apart."""
    directory = (code or ROOT) / "probe"
    hasher = hashlib.sha256()
    for path in sorted(directory.rglob("*.py")):
        name = path.relative_to(directory).as_posix()
        hasher.update(name.encode() + b"\0" + path.read_bytes())
    return hasher.hexdigest()[:12]


def describe(revision: str | None, code: Path | None) -> dict[str, Any]:
    """The commit measured, and for the working tree the files of probe/ changed since it."""
    if revision is not None and (Path(revision) / "probe").is_dir():
        return {
            "source": f"directory {code}",
            "commit": None,
            "probe_changed_since": [],
            "probe_digest": digest(code),
        }
    if revision is not None:
        return {
            "source": f"git archive {revision}",
            "commit": _git("rev-parse", "--short", revision).strip() or revision,
            "probe_changed_since": [],
            "probe_digest": digest(code),
        }
    changed = _git("status", "--porcelain", "--", "probe")
    return {
        "source": "working tree",
        "commit": _git("rev-parse", "--short", "HEAD").strip() or None,
        "probe_changed_since": [line[3:] for line in changed.splitlines()],
        "probe_digest": digest(None),
    }
