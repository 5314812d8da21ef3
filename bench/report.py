"""The figures as readable tables (one column per scenario; per replica beside the single
daemon it is compared with; the targets files' start-up and re-reads) and the profiles."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

Result = Mapping[str, Any]


def _get(result: Result, path: str) -> Any:
    value: Any = result
    for key in path.split("."):
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list | tuple) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _pct(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f} %"


def _of(done: str, due: str) -> Callable[[Result], str]:
    return lambda r: f"{_num(_get(r, done))} / {_num(_get(r, due))}"


def _spread(path: str) -> Callable[[Result], str]:
    return lambda r: " / ".join(_num(_get(r, f"{path}.{k}")) for k in ("p50", "p99", "max"))


def _field(path: str, digits: int = 1) -> Callable[[Result], str]:
    return lambda r: _num(_get(r, path), digits)


def _pair(first: str, second: str) -> Callable[[Result], str]:
    return lambda r: f"{_num(_get(r, first))} / {_num(_get(r, second))}"


def _mib(path: str) -> Callable[[Result], str]:
    return lambda r: _num(None if _get(r, path) is None else _get(r, path) / 2**20, 2)


def _rss_per_job(results: Sequence[Result]) -> dict[int, str]:
    """Per column: (RSS - RSS of the smallest scenario) / extra Jobs; the smallest: RSS / Jobs."""
    figures = [(_get(r, "scenario.jobs"), _get(r, "memory.rss_probing_mib")) for r in results]
    known = [(jobs, rss) for jobs, rss in figures if jobs and rss]
    out: dict[int, str] = {}
    if not known:
        return out
    base_jobs, base_rss = min(known)
    for index, (jobs, rss) in enumerate(figures):
        if not jobs or not rss:
            continue
        if jobs > base_jobs:
            out[index] = f"{(rss - base_rss) * 1024 / (jobs - base_jobs):.1f} (marginal)"
        else:
            out[index] = f"{rss * 1024 / jobs:.1f} (RSS / jobs)"
    return out


Row = tuple[str, str, Callable[[Result], str]]
"""A table's row: its label, the goal, and its cell of a result."""
DIGEST_ROW: Row = ("probe/ digest at daemon start", "", _field("probe_digest"))
RUN_TIME_ROW: Row = ("scenario run time (s)", "", _field("seconds"))
TIER_ROW: Row = ("fake Flink tier: errors logged", "0", _field("tier_errors"))
LOAD_ROW: Row = (
    "load average 1 min (start -> end)",
    "",
    lambda r: (
        f"{_num(_get(r, 'load_average.start.0'), 2)} -> {_num(_get(r, 'load_average.end.0'), 2)}"
    ),
)

ROWS: list[Row] = [
    (
        "targets / jobs / interval (s)",
        "",
        lambda r: (
            f"{_num(_get(r, 'scenario.targets'))} / "
            f"{_num(_get(r, 'scenario.jobs'))} / {_num(_get(r, 'scenario.interval'), 0)}"
        ),
    ),
    ("store", "", _field("scenario.store")),
    RUN_TIME_ROW,
    TIER_ROW,
    DIGEST_ROW,
    LOAD_ROW,
    ("floor: CPU per request, asyncio (us)", "", _field("floor.asyncio.cpu_us_per_request")),
    ("floor: CPU per request, uvloop (us)", "", _field("floor.uvloop.cpu_us_per_request")),
    (
        "floor: CPU per overview / per metrics request (us)",
        "",
        _pair("floor.asyncio.cpu_us_per_overview", "floor.asyncio.cpu_us_per_metrics_request"),
    ),
    ("warm-up: all Jobs STARTED after (s)", "", _field("warmup.all_started_after_s")),
    ("warm-up: counts credited after (s)", "", _field("warmup.counts_credited_after_s")),
    (
        "warm-up: store commits, Jobs written",
        "",
        _pair("warmup.commits.0.commits", "warmup.commits.0.jobs"),
    ),
    ("warm-up: commit p50 / p99 / max (ms)", "", _spread("warmup.commits.0.ms")),
    ("# STEADY: probing, nothing scrapes", "", lambda r: ""),
    ("window (s)", "", _field("steady.window_s")),
    ("rounds done / due", "all", _of("steady.rounds_done", "steady.rounds_due")),
    ("job probes done / due", "all", _of("steady.job_probes_done", "steady.job_probes_due")),
    (
        "jobs not probed within 1.5 intervals",
        "0",
        _field("steady.jobs_not_probed_within_1_5_intervals"),
    ),
    ("rounds skipped", "0", _field("steady.rounds_skipped")),
    ("lag p50 / p99 / max (ms, from logs)", "p99 <= 250", _spread("steady.lag_ms")),
    (
        "rounds with lag <= 250 ms: logs / histogram",
        "",
        lambda r: (
            f"{_pct(_get(r, 'steady.lag_within_goal_share'), 2)} / "
            f"{_pct(_get(r, 'steady.lag_histogram_ms.within_goal_share'), 2)}"
        ),
    ),
    (
        "lag p50 / p99 (ms, histogram buckets)",
        "",
        lambda r: (
            f"{_num(_get(r, 'steady.lag_histogram_ms.p50'))} / "
            f"{_num(_get(r, 'steady.lag_histogram_ms.p99'))}"
        ),
    ),
    (
        "lag mean: logs / histogram (ms)",
        "",
        lambda r: (
            f"{_num(_get(r, 'steady.lag_ms.mean'), 2)} / "
            f"{_num(_get(r, 'steady.lag_histogram_ms.mean'), 2)}"
        ),
    ),
    ("round duration p50 / p99 / max (ms)", "", _spread("steady.round_ms")),
    (
        "daemon CPU, share of one core",
        "<= 25 %",
        lambda r: _pct(_get(r, "steady.cpu_share_of_core")),
    ),
    (
        "daemon's core busy, all processes",
        "",
        lambda r: _pct(_get(r, "steady.core_busy_share_all_processes")),
    ),
    (
        "daemon waiting for a CPU (run queue)",
        "",
        lambda r: _pct(_get(r, "steady.daemon_waiting_for_cpu_share")),
    ),
    (
        "nginx waiting for a CPU (run queue)",
        "",
        lambda r: _pct(_get(r, "steady.tier_waiting_for_cpu_share")),
    ),
    ("requests per probe", "", _field("steady.requests_per_probe", 3)),
    ("daemon CPU per probe (us)", "", _field("steady.cpu_us_per_probe")),
    (
        "PostgreSQL server CPU, share of one core",
        "",
        lambda r: _pct(_get(r, "steady.database_cpu_share_of_core")),
    ),
    ("PostgreSQL server CPU per probe (us)", "", _field("steady.database_cpu_us_per_probe")),
    ("floor per probe (us)", "", _field("steady.floor_us_per_probe")),
    ("CPU per probe / floor", "<= 1.5", _field("steady.ratio_to_floor", 2)),
    ("store commits / s", "", _field("steady.store_commits_per_s", 2)),
    ("store jobs written / s", "", _field("steady.store_jobs_written_per_s")),
    ("store commit p50 / p99 / max (ms)", "", _spread("steady.commit_ms")),
    ("RSS while probing, never scraped (MiB)", "<= 150", _field("memory.rss_probing_mib")),
    ("peak RSS before any scrape, VmHWM (MiB)", "", _field("memory.peak_before_scrapes_mib")),
    ("peak RSS, VmHWM at end (MiB)", "<= 150", _field("memory.peak_mib")),
    ("# /metrics: rendered back to back", "", lambda r: ""),
    ("samples", "", _field("render.samples")),
    (
        "/metrics plain p50 / max (ms)",
        "<= 250",
        lambda r: (
            f"{_num(_get(r, 'render.plain.seconds.p50'))} / "
            f"{_num(_get(r, 'render.plain.seconds.max'))}"
        ),
    ),
    ("/metrics plain size (MiB)", "", _mib("render.plain.bytes")),
    (
        "/metrics gzip p50 / max (ms)",
        "<= 250",
        lambda r: (
            f"{_num(_get(r, 'render.gzip.seconds.p50'))} / "
            f"{_num(_get(r, 'render.gzip.seconds.max'))}"
        ),
    ),
    ("/metrics gzip size (MiB)", "", _mib("render.gzip.bytes")),
    (
        "daemon CPU per scrape plain / gzip (ms)",
        "",
        lambda r: (
            f"{_num(_get(r, 'render.plain.daemon_cpu_ms_per_scrape'))} / "
            f"{_num(_get(r, 'render.gzip.daemon_cpu_ms_per_scrape'))}"
        ),
    ),
    ("# SCRAPED: probing while /metrics is scraped", "", lambda r: ""),
    ("/metrics (gzip) scraped every (s)", "", _field("scraped.scrape_period_s")),
    (
        "scrapes done, duration p50 / p99 (ms)",
        "",
        lambda r: (
            f"{_num(_get(r, 'scraped.scrapes'))}, {_num(_get(r, 'scraped.scrape_ms.p50'))}"
            f" / {_num(_get(r, 'scraped.scrape_ms.p99'))}"
        ),
    ),
    ("rounds done / due", "all", _of("scraped.rounds_done", "scraped.rounds_due")),
    ("job probes done / due", "all", _of("scraped.job_probes_done", "scraped.job_probes_due")),
    (
        "lag p50/p99/max, due during a scrape (ms)",
        "",
        _spread("scraped.lag_ms_due_during_a_scrape"),
    ),
    (
        "lag p50/p99/max, due outside scrapes (ms)",
        "",
        _spread("scraped.lag_ms_due_outside_scrapes"),
    ),
    ("daemon CPU while scraped", "", lambda r: _pct(_get(r, "scraped.cpu_share_of_core"))),
    (
        "daemon waiting for a CPU while scraped",
        "",
        lambda r: _pct(_get(r, "scraped.daemon_waiting_for_cpu_share")),
    ),
    ("# START-UP: restarted on the state file", "", lambda r: ""),
    ("Jobs in the store", "", _field("startup.jobs_in_store")),
    ("/healthz 200 after (s)", "", _field("startup.healthz_s", 3)),
    ("first API answer after (s)", "", _field("startup.first_api_answer_s", 3)),
    ("/readyz 200 after (s)", "<= 2", _field("startup.readyz_s", 3)),
    (
        "log 'starting' / 'state loaded' / 'listening' (s)",
        "",
        lambda r: (
            f"{_num(_get(r, 'startup.log_starting_s'), 3)} / "
            f"{_num(_get(r, 'startup.log_state_loaded_s'), 3)} / "
            f"{_num(_get(r, 'startup.log_listening_s'), 3)}"
        ),
    ),
    ("first probe round began at (s)", "", _field("startup.first_round_began_s", 3)),
    ("log 'ready' at (s)", "", _field("startup.log_ready_s", 3)),
    ("daemon CPU used until ready (s)", "", _field("startup.daemon_cpu_s_at_ready", 3)),
    ("RSS after ready (MiB)", "", _field("startup.rss_after_ready_mib")),
    (
        "shutdown on SIGTERM (s, exit code)",
        "",
        lambda r: f"{_num(_get(r, 'shutdown.seconds'), 2)}, {_num(_get(r, 'shutdown.exit_code'))}",
    ),
    ("shutdown: last commit (Jobs, ms)", "", _pair("shutdown.commit_jobs", "shutdown.commit_ms")),
]


def _same_shape(result: Result, other: Result, per: int = 1) -> bool:
    """``other`` probes what ``result`` does, ``per`` times over."""
    return all(
        _get(other, f"scenario.{key}") == _get(result, f"scenario.{key}") * (per if per_key else 1)
        for key, per_key in (("targets", True), ("jobs", True), ("interval", False))
    )


def _ratio(value: Any, reference: Any) -> str:
    return f"{value / reference:.2f}" if value and reference else "-"


def _to_sqlite(results: Sequence[Result]) -> dict[int, str]:
    """Per PostgreSQL column: its CPU per probe over that of SQLite's with the same shape."""
    out: dict[int, str] = {}
    for index, result in enumerate(results):
        if _get(result, "scenario.store") != "postgresql":
            continue
        for other in results:
            if _get(other, "scenario.store") == "sqlite" and _same_shape(other, result):
                out[index] = _ratio(
                    _get(result, "steady.cpu_us_per_probe"), _get(other, "steady.cpu_us_per_probe")
                )
    return out


def table(results: Sequence[Result]) -> str:
    """One column per scenario with one daemon."""
    names = [str(_get(r, "scenario.name")) for r in results]
    per_job = _rss_per_job(results)
    to_sqlite = _to_sqlite(results)
    rows = [("", "goal", *names)]
    for label, goal, cell in ROWS:
        rows.append((label, goal, *(cell(r) for r in results)))
        if label.startswith("RSS while probing"):
            rows.append(
                ("RSS per job (KiB)", "", *(per_job.get(i, "-") for i in range(len(results))))
            )
        if label.startswith("PostgreSQL server CPU per probe") and to_sqlite:
            rows.append(
                (
                    "CPU per probe: PostgreSQL / SQLite",
                    "<= 1.3",
                    *(to_sqlite.get(i, "-") for i in range(len(results))),
                )
            )
    return _render(rows)


def _render(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        if row[0].startswith("#"):
            lines.append("")
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def profiles(results: Sequence[Result], top: int = 15) -> str:
    lines = []
    for result in results:
        profile = _get(result, "profile")
        if not isinstance(profile, Mapping):
            continue
        for phase, summary in profile.items():
            lines.append(f"\nprofile [{_get(result, 'scenario.name')}] {phase}")
            if not isinstance(summary, Mapping):
                lines.append(f"  {summary}")
                continue
            lines.append(f"  samples: {summary['samples']}")
            for title, key, filter_ in (
                ("self time by package", "by_package", None),
                ("self time by function", "self", None),
                ("inclusive time, flink-probe functions", "inclusive_probe", None),
            ):
                lines.append(f"  {title}:")
                entries = [e for e in summary[key] if filter_ is None or filter_ in e[0]]
                lines.extend(f"    {share:5.1f} %  {name}" for name, share in entries[:top])
    return "\n".join(lines)


def _single(result: Result) -> dict[str, Any]:
    """A single daemon's figures in the shape of one replica's."""
    return {
        "name": f"{_get(result, 'scenario.name')} (one daemon)",
        "targets_held": _get(result, "scenario.targets"),
        "jobs": _get(result, "scenario.jobs"),
        "steady": _get(result, "steady"),
        "memory": _get(result, "memory"),
        "warmup_commits": _get(result, "warmup.commits.0"),
        "shutdown": _get(result, "shutdown"),
    }


REPLICA_ROWS: list[Row] = [
    ("targets held / jobs", "", _pair("targets_held", "jobs")),
    ("leases moved during the window", "no", _field("leases_moved_during_window")),
    ("rounds done / due", "all", _of("steady.rounds_done", "steady.rounds_due")),
    ("job probes done / due", "all", _of("steady.job_probes_done", "steady.job_probes_due")),
    ("steady state verified (/metrics)", "yes", _field("steady.steady_state_verified")),
    ("lag p50 / p99 / max (ms, from logs)", "p99 <= 250", _spread("steady.lag_ms")),
    (
        "lag p50 / p99 (ms, histogram buckets)",
        "",
        _pair("steady.lag_histogram_ms.p50", "steady.lag_histogram_ms.p99"),
    ),
    (
        "rounds with lag <= 250 ms (histogram)",
        "",
        lambda r: _pct(_get(r, "steady.lag_histogram_ms.within_goal_share"), 2),
    ),
    ("daemon CPU, share of one core", "", lambda r: _pct(_get(r, "steady.cpu_share_of_core"))),
    (
        "daemon's core busy, all processes",
        "",
        lambda r: _pct(_get(r, "steady.core_busy_share_all_processes")),
    ),
    ("daemon CPU per probe (us)", "", _field("steady.cpu_us_per_probe")),
    (
        "PostgreSQL server CPU, share of one core",
        "",
        lambda r: _pct(_get(r, "steady.database_cpu_share_of_core")),
    ),
    ("RSS in the steady window (MiB)", "", _field("memory.rss_steady_mib")),
    (
        "warm-up: store commits, Jobs written",
        "",
        _pair("warmup_commits.commits", "warmup_commits.jobs"),
    ),
    ("warm-up: commit p50 / p99 / max (ms)", "", _spread("warmup_commits.ms")),
    ("shutdown: last commit (Jobs, ms)", "", _pair("shutdown.commit_jobs", "shutdown.commit_ms")),
]


def replicas_table(result: Result, results: Sequence[Result]) -> str:
    """One column per replica, after the single daemon on PostgreSQL with one replica's share
    (when the run measured it): the ratio of CPU per probe is each replica's over its."""
    replicas = int(_get(result, "scenario.replicas"))
    columns = list(_get(result, "replicas") or [])
    reference = next(
        (
            other
            for other in results
            if _get(other, "scenario.replicas") == 1
            and _get(other, "scenario.store") == "postgresql"
            and _same_shape(other, result, replicas)
        ),
        None,
    )
    if reference is not None:
        columns.insert(0, _single(reference))
    base = _get(columns[0], "steady.cpu_us_per_probe") if reference is not None else None
    rows = [("", "goal", *(str(_get(c, "name")) for c in columns))]
    for label, goal, cell in REPLICA_ROWS:
        rows.append((label, goal, *(cell(c) for c in columns)))
        if label == "daemon CPU per probe (us)" and base:
            rows.append(
                (
                    "CPU per probe / one daemon's",
                    "<= 1.2",
                    *(_ratio(_get(c, "steady.cpu_us_per_probe"), base) for c in columns),
                )
            )
    title = (
        f"# {_get(result, 'scenario.name')}: {replicas} replicas on one PostgreSQL database, "
        f"leases settled after {_num(_get(result, 'leases.settled_after_s'), 1)} s "
        f"(held: {_get(result, 'leases.held')}); run time {_num(_get(result, 'seconds'))} s; "
        f"fake Flink tier errors: {_num(_get(result, 'tier_errors'))}; "
        "load average "
        f"{_num(_get(result, 'load_average.start.0'), 2)} -> "
        f"{_num(_get(result, 'load_average.end.0'), 2)}"
    )
    return title + "\n" + _render(rows)


def _runs(path: str) -> Callable[[Result], str]:
    """The median of a re-read's figure, and every run's value."""
    return lambda r: (
        f"{_num(_get(r, f'{path}.median'), 3)} "
        f"({', '.join(_num(v, 3) for v in _get(r, f'{path}.runs') or [])})"
    )


def _steps(step: str) -> Callable[[Result], str]:
    """A re-read step's cost per target (us) at each size measured."""

    def cell(r: Result) -> str:
        sizes = _get(r, "reread_steps") or {}
        return " / ".join(
            f"{_num(_get(figures, f'us_per_target.{step}'), 2)}" for figures in sizes.values()
        )

    return cell


FILES_ROWS: list[Row] = [
    (
        "targets / files / interval (s)",
        "",
        lambda r: (
            f"{_num(_get(r, 'scenario.targets'))} / {_num(_get(r, 'scenario.files'))} / "
            f"{_num(_get(r, 'scenario.interval'), 0)}"
        ),
    ),
    DIGEST_ROW,
    RUN_TIME_ROW,
    TIER_ROW,
    LOAD_ROW,
    ("# START-UP", "", lambda r: ""),
    ("/healthz 200 after (s)", "", _field("startup.healthz_s", 3)),
    (
        "log 'state loaded' / 'listening' (s)",
        "",
        lambda r: (
            f"{_num(_get(r, 'startup.log_state_loaded_s'), 3)} / "
            f"{_num(_get(r, 'startup.log_listening_s'), 3)}"
        ),
    ),
    (
        "flink_probe_targets{source=file}, first scrape",
        "",
        _field("startup.targets_known_at_first_scrape", 0),
    ),
    ("/readyz 200 after (s): every target probed", "", _field("startup.readyz_s", 3)),
    ("log 'ready' at (s)", "", _field("startup.log_ready_s", 3)),
    ("every Job discovered after (s)", "", _field("startup.all_jobs_discovered_s", 3)),
    ("daemon CPU used until ready (s)", "", _field("startup.daemon_cpu_s_at_ready", 3)),
    ("RSS after ready (MiB)", "", _field("startup.rss_after_ready_mib")),
    ("# STEADY: windows without a change (median)", "", lambda r: ""),
    ("daemon CPU, share of one core", "", lambda r: _pct(_get(r, "steady.cpu_share_of_core"))),
    (
        "rounds done / due per interval",
        "",
        _of("steady.rounds_done_per_interval", "steady.rounds_due_per_interval"),
    ),
    ("daemon CPU per round (us)", "", _field("steady.cpu_us_per_round")),
    ("# RE-READS: CPU over a quiet window's, median (runs)", "", lambda r: ""),
    ("file grown by a target: CPU (s)", "", _runs("rereads.file_grown.cpu_s")),
    ("  'target started' after (s)", "", _runs("rereads.file_grown.applied_after_s")),
    ("  its first round after (s)", "", _runs("rereads.file_grown.first_round_after_s")),
    ("file shrunk by it: CPU (s)", "", _runs("rereads.file_shrunk.cpu_s")),
    ("  'target stopped' after (s)", "", _runs("rereads.file_shrunk.applied_after_s")),
    ("SIGHUP: CPU (s)", "", _runs("rereads.sighup.cpu_s")),
    ("  'configuration reloaded' after (s)", "", _runs("rereads.sighup.applied_after_s")),
    ("# RE-READ STEPS, one process: us per target at N/4 / N/2 / N", "", lambda r: ""),
    ("read and parse every file", "", _steps("read_all")),
    ("read again, nothing changed", "", _steps("read_unchanged")),
    ("read again, one file changed", "", _steps("read_one_changed")),
    ("merge into one name space", "", _steps("merge")),
    ("compare with the running set", "", _steps("compare")),
]


def files_table(results: Sequence[Result]) -> str:
    """One column per targets-files scenario."""
    rows = [("", "goal", *(str(_get(r, "scenario.name")) for r in results))]
    rows += [(label, goal, *(cell(r) for r in results)) for label, goal, cell in FILES_ROWS]
    return _render(rows)


def tables(results: Sequence[Result]) -> list[str]:
    """Every table the results call for, and the profiles."""
    files = [r for r in results if _get(r, "kind") == "targets_files"]
    jobs = [r for r in results if _get(r, "kind") != "targets_files"]
    single = [r for r in jobs if (_get(r, "scenario.replicas") or 1) == 1]
    out = [table(single)] if single else []
    out += [replicas_table(r, jobs) for r in jobs if (_get(r, "scenario.replicas") or 1) > 1]
    if files:
        out.append(files_table(files))
    if profiles(results):
        out.append(profiles(results))
    return out
