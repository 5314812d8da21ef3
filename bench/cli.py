"""``python -m bench``: the command line.

Full run (about 8 minutes): 1,000 and 10,000 STARTED jobs over 100 targets at a 10 s interval,
5 intervals per window, a py-spy profile at 10k, start-up from a store of 10k Jobs.
``--store postgresql|both`` runs each scenario on the run's private PostgreSQL server (or on
SQLite, then on it); ``--replicas N`` adds N daemons sharing one database with N x the
targets and jobs; ``--targets-files N`` instead times start-up and re-reads with N targets in
file_sd files.
``--quick`` (CI smoke test, well under a minute): 200 jobs over 10 targets at 1 s, 3 intervals,
then two replicas on PostgreSQL when a server is installed.
Exit code 0 once every scenario ran, whatever the figures; 1 if something could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import code, report
from .machine import Machine, pick_cores
from .replicas import ReplicasRun
from .run import Options, Scenario, ScenarioRun
from .subject import StoreKind
from .targetfiles import TargetFilesRun, TargetFilesScenario
from .tier import ServerKind, nginx_binary

FULL = (
    Scenario(
        "1k",
        targets=100,
        jobs=1_000,
        interval=10.0,
        intervals=5,
        startup=False,
        profile=False,
        floor_requests=20_000,
        renders=5,
    ),
    Scenario(
        "10k",
        targets=100,
        jobs=10_000,
        interval=10.0,
        intervals=5,
        startup=True,
        profile=True,
        floor_requests=30_000,
        renders=5,
    ),
)
QUICK = (
    Scenario(
        "quick",
        targets=10,
        jobs=200,
        interval=1.0,
        intervals=3,
        startup=True,
        profile=False,
        floor_requests=2_000,
        renders=3,
        floor_repeats=2,
        metrics_max_age=2.0,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Measure flink-probe against the floor."
    )
    parser.add_argument("--quick", action="store_true", help="the CI smoke test (< 60 s)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    parser.add_argument("--jobs", type=int, help="one custom scenario with this many jobs")
    parser.add_argument("--targets", type=int, default=100, help="targets of --jobs (100)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds, for --jobs (10)")
    parser.add_argument("--intervals", type=int, help="intervals per measured window")
    parser.add_argument(
        "--server",
        choices=("auto", "nginx", "python"),
        default="auto",
        help="what serves the fake Flink tier (auto: nginx if installed)",
    )
    parser.add_argument(
        "--source",
        choices=("discover", "static"),
        default="discover",
        help="Jobs discovered from the overview (default) or declared in `jobs:`",
    )
    parser.add_argument("--uvloop", action="store_true", help="run the daemon on uvloop")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--profile-seconds", type=float, default=30.0)
    parser.add_argument(
        "--scrape-period", type=float, help="seconds between scrapes (default: the interval)"
    )
    parser.add_argument(
        "--nice", type=int, default=0,
        help="niceness added to the tier, floor and daemon (e.g. -10 on a shared machine)",
    )  # fmt: skip
    parser.add_argument(
        "--code", metavar="REV|DIR",
        help="measure probe/ as of this commit (git archive), or the probe/ in DIR, instead of"
        " the working tree",
    )  # fmt: skip
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql", "both"),
        default="sqlite",
        help="the daemon's store: SQLite, a private PostgreSQL server, or each in turn",
    )
    parser.add_argument(
        "--replicas", type=int, default=1, metavar="N",
        help="also N daemons sharing one PostgreSQL database, N x the targets and jobs",
    )  # fmt: skip
    parser.add_argument(
        "--targets-files", type=int, metavar="N",
        help="instead: start-up and re-reads with N targets in file_sd files",
    )  # fmt: skip
    parser.add_argument("--files", type=int, default=10, help="files of --targets-files (10)")
    parser.add_argument(
        "--edits", type=int, default=3, help="re-reads of each kind, --targets-files (3)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse combinations that cannot run, in one line (exit code 2)."""
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    if args.replicas > 1 and args.store == "sqlite":
        parser.error("--replicas needs --store postgresql or both (replicas share a database)")
    if args.targets_files is not None and (args.targets_files < 1 or args.files < 1):
        parser.error("--targets-files and --files must be at least 1")


def _on_store(scenario: Scenario, store: StoreKind, named: bool) -> Scenario:
    name = f"{scenario.name} {store}" if named else scenario.name
    return replace(scenario, name=name, store=store)


def _replicated(scenario: Scenario, replicas: int) -> Scenario:
    """``replicas`` daemons on PostgreSQL, each with ``scenario``'s targets and jobs."""
    return replace(
        scenario,
        name=f"{scenario.name} postgresql x{replicas}",
        targets=scenario.targets * replicas,
        jobs=scenario.jobs * replicas,
        store="postgresql",
        replicas=replicas,
        startup=False,
        profile=False,
        floor_repeats=0,
        renders=0,
    )


def scenarios(args: argparse.Namespace, postgresql: bool = True) -> list[Scenario]:
    """The Job scenarios to run (``postgresql``: a server is installed, for ``--quick``)."""
    if args.jobs:
        chosen = [
            Scenario(
                f"{args.jobs}",
                targets=args.targets,
                jobs=args.jobs,
                interval=args.interval,
                intervals=5,
                startup=True,
                profile=True,
                floor_requests=20_000,
                renders=5,
            )
        ]
    else:
        chosen = list(QUICK if args.quick else FULL)
    if args.intervals:
        chosen = [replace(s, intervals=args.intervals) for s in chosen]
    if args.no_profile:
        chosen = [replace(s, profile=False) for s in chosen]
    stores: list[StoreKind] = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    on_stores = [
        _on_store(s, store, named=store != "sqlite" or len(stores) > 1)
        for s in chosen
        for store in stores
    ]
    if args.replicas > 1:
        return on_stores + [_replicated(s, args.replicas) for s in chosen]
    if args.quick and postgresql:
        # Counts of the targets handed over are read afresh every round: a short warm-up.
        return on_stores + [replace(_replicated(s, 2), metrics_refresh=0.0) for s in chosen]
    return on_stores


def _server(choice: str, say: Callable[[str], None]) -> ServerKind:
    if choice == "python":
        return "python"
    if nginx_binary() is not None:
        return "nginx"
    if choice == "nginx":
        raise SystemExit("bench: nginx is not installed (apt-get install nginx-light)")
    say("bench: nginx is not installed: the fake Flink tier is bench.leanserver (Python) instead")
    return "python"


def _postgresql_for_quick(args: argparse.Namespace, say: Callable[[str], None]) -> bool:
    """Whether ``--quick`` adds its PostgreSQL smoke test: without a server it says why and
    does not, unless under CI (``CI=true``), where the run then fails."""
    if not args.quick or os.environ.get("CI") == "true":
        return True
    from probe.testing.postgres import missing_reason

    reason = missing_reason()
    if reason is not None:
        say(f"bench: no PostgreSQL smoke test: {reason}")
    return reason is None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    tier_cpu, daemon_cpu = pick_cores()
    if tier_cpu is not None:
        # The bench itself (mostly asleep) shares the tier's core, never the daemon's.
        os.sched_setaffinity(0, {tier_cpu})
    else:
        say("bench: a single core: nothing is pinned, figures include the tier's own CPU")
    uvloop_available = importlib.util.find_spec("uvloop") is not None
    if args.uvloop and not uvloop_available:
        raise SystemExit("bench: --uvloop needs uvloop (pip install uvloop)")
    workdir = Path(tempfile.mkdtemp(prefix="flink-probe-bench-"))
    workdir.chmod(0o755)  # nginx's worker reads the files below it
    code_dir = code.extract(args.code, workdir / "code") if args.code else None
    options = Options(
        server=_server(args.server, say),
        source=args.source,
        uvloop=args.uvloop,
        floor_uvloop=uvloop_available,
        tier_cpu=tier_cpu,
        daemon_cpu=daemon_cpu,
        profile_seconds=args.profile_seconds,
        scrape_period=args.scrape_period,
        nice=args.nice,
        code=code_dir,
    )
    machine = Machine.describe()
    began = time.monotonic()
    header: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": asdict(machine),
        "server": options.server,
        "source": options.source,
        "event_loop": "uvloop" if options.uvloop else "asyncio",
        "cores": {"tier_and_bench": tier_cpu, "daemon_and_floor": daemon_cpu},
        "nice": options.nice,
        "code": code.describe(args.code, code_dir),
    }
    results: list[dict[str, Any]] = []
    chosen = [] if args.targets_files else scenarios(args, _postgresql_for_quick(args, say))
    runs = len(chosen) + (1 if args.targets_files else 0)
    try:
        with contextlib.ExitStack() as stack:
            database = None
            if any(scenario.store == "postgresql" for scenario in chosen):
                from .database import database_server

                say("bench: starting a private PostgreSQL server")
                database = stack.enter_context(database_server(workdir))
            for scenario in chosen:
                directory = workdir / scenario.name.replace(" ", "-")
                directory.mkdir()
                kind = ReplicasRun if scenario.replicas > 1 else ScenarioRun
                run = kind(scenario, options, directory, say, database)
                results.append(asyncio.run(run.run()))
        if args.targets_files:
            files_scenario = TargetFilesScenario(
                f"{args.targets_files} targets in files",
                targets=args.targets_files,
                files=args.files,
                interval=args.interval,
                edits=args.edits,
                profile=not args.no_profile,
            )
            directory = workdir / "targets-files"
            directory.mkdir()
            files_run = TargetFilesRun(files_scenario, options, directory, say)
            results.append(asyncio.run(files_run.run()))
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        say(f"bench: failed: {exc}")
        say(f"bench: files kept in {workdir}")
        return 1
    finally:
        if not args.keep and results and len(results) == runs:
            shutil.rmtree(workdir, ignore_errors=True)
    header["seconds"] = round(time.monotonic() - began, 1)
    print(_describe(header))
    print("\n\n".join(report.tables(results)))
    if args.json:
        args.json.write_text(json.dumps({**header, "results": results}, indent=1))
    if args.keep:
        say(f"bench: files kept in {workdir}")
    return 0


def _describe(header: dict[str, Any]) -> str:
    machine = header["machine"]
    return (
        f"flink-probe benchmark, {header['date']}, {header['seconds']} s\n"
        f"machine: {machine['cpus']} x {machine['cpu_model']}, Python {machine['python']}, "
        f"Linux {machine['kernel']}\n"
        f"fake Flink tier: {header['server']}; Jobs: {header['source']}; daemon event loop: "
        f"{header['event_loop']}; cores: tier+bench {header['cores']['tier_and_bench']}, "
        f"daemon+floor {header['cores']['daemon_and_floor']}\n"
        f"code: {header['code']['source']}, commit {header['code']['commit']}, probe/ digest "
        f"{header['code']['probe_digest']}, changed since the commit: "
        f"{', '.join(header['code']['probe_changed_since']) or 'none'}"
        f"\nnice: {header['nice']}; command: {header['command']}"
    )
