"""``flink-probe``: the command line.

Exit codes: 0 success; 1 the daemon could not run (state store, listen address); 2 a usage or
configuration error. A user mistake prints one line per problem to stderr, never a traceback:
argparse's usage errors too (`OneLineParser`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import anyio

from probe._cogs.errors import ExitCode
from probe._cogs.logs import configure, get_logger
from probe._commands.events import EventSelection, show_events
from probe._commands.jobs import DEFAULT_URL, DaemonUrl, list_jobs, parse_daemon_url
from probe._config import Config, ConfigError, dump_effective, load_config
from probe._core.events import Reason
from probe._core.model import InvalidJobId, JobState, canonical_job_id
from probe._store import StoreError
from probe._version import __version__


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line, ``flink-probe: error: ...``, pointing at ``--help`` (exit 2);
    argparse would print the whole usage first. Sub-parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        problem = " ".join(message.splitlines())
        self.exit(ExitCode.USAGE, f"flink-probe: error: {problem} (see {self.prog} --help)\n")


def _daemon_url(text: str) -> DaemonUrl:
    """``--url``: a bad one is a usage error, refused before any request."""
    try:
        return parse_daemon_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _job_id(text: str) -> str:
    """``--job``: a Job id, dashed or as 32 hex digits."""
    try:
        return canonical_job_id(text)
    except InvalidJobId as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="flink-probe",
        description="Watch Apache Flink jobs as Job resources and export them to Prometheus.",
    )
    parser.add_argument("--version", action="version", version=f"flink-probe {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    config_help = (
        "YAML configuration file (default: $FLINK_PROBE_CONFIG; with neither, the sidecar "
        "default: discover every job of http://127.0.0.1:8081)"
    )
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, metavar="FILE", help=config_help)
    check = commands.add_parser(
        "check-config", help="validate the configuration and print it (secrets redacted)"
    )
    check.add_argument("--config", type=Path, metavar="FILE", help=config_help)
    demo = commands.add_parser(
        "demo",
        help="run the daemon against a built-in simulated Flink cluster and show a live table",
    )
    demo.add_argument("--port", type=int, default=9270, help="HTTP port (default 9270)")
    demo.add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)"
    )
    jobs = commands.add_parser("jobs", help="list the Jobs of a running daemon")
    jobs.add_argument(
        "--url",
        type=_daemon_url,
        default=DEFAULT_URL,
        help="the daemon's address (default http://127.0.0.1:9270)",
    )
    jobs.add_argument("-n", "--namespace", default=None, help="namespace (default: default)")
    jobs.add_argument(
        "--state",
        type=str.upper,
        choices=[state.value for state in JobState],
        help="only Jobs in this state",
    )
    jobs.add_argument(
        "-o", "--output", choices=["table", "json", "yaml"], default="table", help="format"
    )
    events = commands.add_parser(
        "events", help="list what happened to a running daemon's Jobs, and why"
    )
    events.add_argument(
        "--url",
        type=_daemon_url,
        default=DEFAULT_URL,
        help="the daemon's address (default http://127.0.0.1:9270)",
    )
    events.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    events.add_argument("--job", type=_job_id, metavar="ID", help="only this Job's events")
    events.add_argument("--deployment", metavar="NAME", help="only this deployment's events")
    events.add_argument(
        "--reason",
        type=str.upper,
        choices=[reason.value for reason in Reason],
        help="only events of this reason",
    )
    events.add_argument(
        "-f", "--follow", action="store_true", help="then print each new event, until Ctrl-C"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # These need no configuration: a bad FLINK_PROBE_* variable must not block them.
    if args.command == "demo":
        from probe._commands.demo import main as demo

        return demo(port=args.port, duration=args.duration)
    if args.command == "jobs":
        return list_jobs(
            args.url,
            namespace=args.namespace,
            state=None if args.state is None else JobState(args.state),
            output=args.output,
            out=sys.stdout,
            err=sys.stderr,
        )
    if args.command == "events":
        selection = EventSelection(
            args.namespace,
            args.job,
            args.deployment,
            None if args.reason is None else Reason(args.reason),
        )
        return show_events(args.url, selection, follow=args.follow, out=sys.stdout, err=sys.stderr)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"flink-probe: config: {line}", file=sys.stderr)
        return ExitCode.USAGE
    if args.command == "check-config":
        sys.stdout.write(dump_effective(config))
        return ExitCode.OK
    return run(config, args.config)


def run(config: Config, config_path: Path | None = None) -> int:
    from probe._commands.run import Daemon

    configure(config.logging.level, config.logging.format)
    log = get_logger("flink_probe")
    log.info("starting", version=__version__)
    try:
        return anyio.run(Daemon(config, config_path=config_path).run)
    except StoreError as exc:
        log.error("cannot use the state store", error=str(exc))
        print(f"flink-probe: {exc}", file=sys.stderr)
    except OSError as exc:
        # Binding the listen address is the only OSError that reaches here.
        message = f"cannot listen on {config.server.listen}: {exc.strerror or exc}"
        log.error("cannot start", error=message)
        print(f"flink-probe: {message}", file=sys.stderr)
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.FAILED


if __name__ == "__main__":
    sys.exit(main())
