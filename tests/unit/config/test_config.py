"""Configuration: defaults, sources and their priority, and one clear line per mistake."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from tls_helpers import Authority

from probe._cogs.credentials import BasicCredentials, BearerToken
from probe._config import Config, ConfigError, JobConfig, TargetConfig, dump_effective, load_config
from probe._config.discovery import ProfileConfig, TargetsHttpConfig
from probe._config.models import ProbeConfig, ServerConfig
from probe._config.redaction import redacted_dict
from probe._config.units import format_byte_size, format_duration, parse_byte_size, parse_duration

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "example.yaml"
POSTGRESQL_EXAMPLE = EXAMPLE.with_name("example-postgresql.yaml")
JOB_ID = "3f1da3c8-6f22-430f-9200-eda014ea5319"
OTHER_JOB_ID = "6b0e6a4c-2f7e-4c59-9a52-1f0e2b7d9c11"
DURATION_HINT = "use e.g. 500ms, 1.5s, 10s, 5m, 1h, 30d, or a number of seconds"


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative state paths resolve against the working directory: make it a known one."""
    monkeypatch.chdir(tmp_path)


def load_text(text: str, environ: Mapping[str, str] | None = None) -> Config:
    path = Path("flink-probe.yaml")
    path.write_text(text)
    return load_config(path, environ={} if environ is None else environ)


def error_lines(text: str | None, environ: Mapping[str, str] | None = None) -> list[str]:
    environ = {} if environ is None else environ
    path = None
    if text is not None:
        path = Path("flink-probe.yaml")
        path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ=environ)
    return raised.value.errors


# --- defaults -------------------------------------------------------------------------------


def test_an_empty_file_gives_the_defaults_and_no_targets(tmp_path: Path) -> None:
    config = load_text("")

    assert config.server.listen == "0.0.0.0:9270"
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9270)
    assert config.probe == ProbeConfig(
        interval=10.0,
        timeout=5.0,
        not_found_grace=3,
        start_timeout=600.0,
        concurrency=64,
        per_target_concurrency=8,
        max_body_bytes=4 * 1024 * 1024,
        metrics_retention=3600.0,
        metrics_refresh=60.0,
    )
    assert config.state.path == tmp_path / "flink-probe.db"
    assert (config.logging.level, config.logging.format) == ("info", "json")
    assert config.targets == []
    assert config.jobs == []


def test_a_file_without_targets_has_no_targets() -> None:
    config = load_text("probe: {interval: 20s}\njobs:\n")

    assert config.targets == []
    assert config.jobs == []


def test_no_file_at_all_is_the_sidecar_default(tmp_path: Path) -> None:
    config = load_config(None, environ={})

    assert config.targets == [
        TargetConfig(name="local", url="http://127.0.0.1:8081/", discover=True, namespace="default")
    ]
    assert config.jobs == []
    assert config.state.path == tmp_path / "flink-probe.db"
    assert config.probe == ProbeConfig()


def test_flink_probe_config_names_the_file_when_no_path_is_given(tmp_path: Path) -> None:
    path = tmp_path / "from-env.yaml"
    path.write_text("targets: [{name: remote, url: 'http://flink:8081'}]\n")

    config = load_config(None, environ={"FLINK_PROBE_CONFIG": str(path)})

    assert [target.name for target in config.targets] == ["remote"]


def test_an_explicit_path_wins_over_flink_probe_config(tmp_path: Path) -> None:
    path = tmp_path / "explicit.yaml"
    path.write_text("logging: {level: debug}\n")

    config = load_config(path, environ={"FLINK_PROBE_CONFIG": str(tmp_path / "absent.yaml")})

    assert config.logging.level == "debug"


def test_the_process_environment_is_used_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLINK_PROBE_PROBE__INTERVAL", "7s")

    assert load_config(None).probe.interval == 7.0


def test_metrics_max_age_defaults_to_the_probe_interval_plus_ten_seconds() -> None:
    config = load_text(
        "probe: {interval: 30s}\n"
        "targets:\n"
        "  - {name: a, url: 'http://a:8081'}\n"
        "  - {name: b, url: 'http://b:8081', metrics_max_age: 1m, overview_max_age: 0}\n"
    )

    a, b = config.targets
    assert (a.metrics_max_age, a.overview_max_age) == (40.0, 3.0)
    assert (b.metrics_max_age, b.overview_max_age) == (60.0, 0.0)


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("http://flink:8081", "http://flink:8081/"),
        ("https://flink.example.com/prod/", "https://flink.example.com/prod/"),
        ("https://flink.example.com/prod", "https://flink.example.com/prod/"),
        ("HTTP://flink:8081", "http://flink:8081/"),
        ("http://user:pw@flink:8081", "http://user:pw@flink:8081/"),
    ],
)
def test_target_urls_end_with_a_slash(url: str, normalised: str) -> None:
    assert TargetConfig(name="t", url=url).url == normalised


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("0.0.0.0:9270", "0.0.0.0", 9270),
        ("127.0.0.1:1", "127.0.0.1", 1),
        ("localhost:65535", "localhost", 65535),
        ("[::1]:9270", "::1", 9270),
        ("[::]:80", "::", 80),
    ],
)
def test_listen_address_is_split_into_host_and_port(listen: str, host: str, port: int) -> None:
    server = ServerConfig(listen=listen)

    assert (server.host, server.port) == (host, port)


def test_job_ids_are_stored_in_canonical_form() -> None:
    config = load_text(
        "targets: [{name: a, url: 'http://a:8081'}]\n"
        "jobs:\n"
        f"  - {{id: {JOB_ID.upper()}, target: a, deployment: orders}}\n"
        f"  - {{id: {OTHER_JOB_ID.replace('-', '')}, target: a, deployment: payments,"
        "      namespace: team-1, spec: {parallelism: 2}}\n"
    )

    assert config.jobs == [
        JobConfig(id=JOB_ID, target="a", deployment="orders", namespace="default", spec={}),
        JobConfig(
            id=OTHER_JOB_ID,
            target="a",
            deployment="payments",
            namespace="team-1",
            spec={"parallelism": 2},
        ),
    ]


def test_logging_level_and_format_are_case_insensitive() -> None:
    config = load_text("logging: {level: WARNING, format: Auto}")

    assert (config.logging.level, config.logging.format) == ("warning", "auto")


# --- durations and sizes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1ms", 0.001),
        ("1.5s", 1.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("2.5", 2.5),
        ("7", 7.0),
        (" 10s ", 10.0),
        (10, 10.0),
        (0.25, 0.25),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["soon", "10 minutes", "1w", "10S", "1m30s", "", "s", "inf", "nan", True, None, [1]]
)
def test_garbage_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["-1s", "-1", -0.5, -3])
def test_negative_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (0.5, "500ms"), (1.5, "1.5s"), (10.0, "10s"), (600.0, "10m"), (3600.0, "1h")],
)
def test_durations_are_written_the_way_people_write_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_a_written_duration_reads_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4MiB", 4 * 1024 * 1024),
        ("512KiB", 512 * 1024),
        ("1GiB", 1024**3),
        ("100B", 100),
        ("100", 100),
        (4096, 4096),
    ],
)
def test_byte_sizes(text: str | int, size: int) -> None:
    assert parse_byte_size(text) == size
    assert parse_byte_size(format_byte_size(size)) == size


@pytest.mark.parametrize("text", ["4MB", "4 megabytes", "1.5MiB", "-1", "", True, 1.5])
def test_garbage_byte_sizes_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_byte_size(text)


# --- errors ---------------------------------------------------------------------------------

TARGET_A = "targets: [{name: local, url: 'http://a:8081'}]\n"


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        pytest.param(
            "probe: {interval: 2s}",
            {},
            ["probe.timeout: must not exceed probe.interval (5s > 2s)"],
            id="timeout-over-interval",
        ),
        pytest.param("probe: {intervall: 10s}", {}, ["probe.intervall: unknown key"], id="typo"),
        pytest.param("prob: {}", {}, ["prob: unknown key"], id="unknown-section"),
        pytest.param(
            "targets: [{name: a, url: 'http://a:8081'}, {name: b, url: 'ftp://x'}]",
            {},
            ["targets[1].url: must be an http(s) URL with a host, got 'ftp://x'"],
            id="url-scheme",
        ),
        pytest.param(
            "targets: [{name: a, url: 'http://'}]",
            {},
            ["targets[0].url: must be an http(s) URL with a host, got 'http://'"],
            id="url-without-host",
        ),
        pytest.param(
            "targets: [{name: a, url: 'http://a:99999'}]",
            {},
            ["targets[0].url: must be an http(s) URL with a host, got 'http://a:99999'"],
            id="url-bad-port",
        ),
        pytest.param(
            "targets: [{name: a, url: 'http://a:8081/?x=1'}]",
            {},
            ["targets[0].url: must not have a query or fragment, got 'http://a:8081/?x=1'"],
            id="url-query",
        ),
        pytest.param(
            "targets: [{name: a}]",
            {},
            ["targets[0].url: required key is missing"],
            id="url-missing",
        ),
        pytest.param(
            "targets: [{name: 'a b', url: 'http://a'}, {name: '', url: 'http://b'}]",
            {},
            [
                "targets[0].name: must match [A-Za-z0-9_.-]+, got 'a b'",
                "targets[1].name: must not be empty",
            ],
            id="target-names",
        ),
        pytest.param(
            "targets: [{name: a, url: 'http://a'}, {name: a, url: 'http://b'}]",
            {},
            ["targets[1].name: duplicate target name 'a' (also targets[0])"],
            id="duplicate-target",
        ),
        pytest.param(
            "targets: [{name: a, url: 'http://a', headers: {X-Token: 5}}]",
            {},
            # A header value may be a secret: an error never quotes it.
            ["targets[0].headers.X-Token: must be a string, got <redacted>"],
            id="header-value",
        ),
        pytest.param(
            "targets: [{name: a, url: 'http://a', discover: maybe}]",
            {},
            ["targets[0].discover: must be true or false, got 'maybe'"],
            id="discover",
        ),
        pytest.param(
            "targets: [{name: a, url: 'http://a', overview_max_age: -1s}]",
            {},
            ["targets[0].overview_max_age: must not be negative, got '-1s'"],
            id="negative-max-age",
        ),
        pytest.param(
            "probe: {metrics_refresh: -5s}",
            {},
            ["probe.metrics_refresh: must not be negative, got '-5s'"],
            id="negative-metrics-refresh",
        ),
        pytest.param(
            "events: {retention: 0s, max_per_job: 0}",
            {},
            [
                "events.retention: must be at least 1ms",
                "events.max_per_job: must be at least 1, got 0",
            ],
            id="events-retention",
        ),
        pytest.param(
            "",
            {"FLINK_PROBE_PROBE__METRICS_REFRESH": "soon"},
            [
                "probe.metrics_refresh: invalid duration 'soon': use e.g. 500ms, 1.5s, 10s, 5m, "
                "1h, 30d, or a number of seconds (from FLINK_PROBE_PROBE__METRICS_REFRESH)"
            ],
            id="metrics-refresh-env",
        ),
        pytest.param(
            TARGET_A + f"jobs: [{{id: {JOB_ID}, target: prod, deployment: orders}}]",
            {},
            ["jobs[0].target: unknown target 'prod' (declared: local)"],
            id="unknown-target",
        ),
        pytest.param(
            f"jobs: [{{id: {JOB_ID}, target: prod, deployment: orders}}]",
            {},
            ["jobs[0].target: unknown target 'prod' (declared: none)"],
            id="no-targets",
        ),
        pytest.param(
            TARGET_A + "jobs: [{id: abc, target: local, deployment: orders}]",
            {},
            [
                "jobs[0].id: job id 'abc' is not a UUID"
                " (expected e.g. 3f1da3c8-6f22-430f-9200-eda014ea5319)"
            ],
            id="job-id",
        ),
        pytest.param(
            TARGET_A + "jobs:\n"
            f"  - {{id: {JOB_ID}, target: local, deployment: a}}\n"
            f"  - {{id: {JOB_ID.upper()}, target: local, deployment: b}}\n",
            {},
            [f"jobs[1].id: duplicate job id '{JOB_ID}' (also jobs[0])"],
            id="duplicate-job",
        ),
        pytest.param(
            TARGET_A + f"jobs: [{{id: {JOB_ID}, target: local, deployment: ''}}]",
            {},
            ["jobs[0].deployment: must not be empty"],
            id="empty-deployment",
        ),
        pytest.param(
            TARGET_A + f"jobs: [{{id: {JOB_ID}, target: local, deployment: a, spec: [1]}}]",
            {},
            ["jobs[0].spec: must be a mapping, got a list"],
            id="spec-not-mapping",
        ),
        pytest.param(
            "server: {listen: '0.0.0.0:70000'}",
            {},
            ["server.listen: port must be 0..65535, got 70000"],
            id="listen-port",
        ),
        pytest.param(
            "server: {listen: '0.0.0.0'}",
            {},
            ["server.listen: must be host:port (IPv6 as [::1]:9270), got '0.0.0.0'"],
            id="listen-no-port",
        ),
        pytest.param(
            "server: {listen: '::1:9270'}",
            {},
            ["server.listen: write an IPv6 address in brackets, e.g. [::1]:9270, got '::1:9270'"],
            id="listen-ipv6",
        ),
        pytest.param(
            "probe: {interval: soon}",
            {},
            [f"probe.interval: invalid duration 'soon': {DURATION_HINT}"],
            id="duration-garbage",
        ),
        pytest.param(
            "probe: {start_timeout: -1s}",
            {},
            ["probe.start_timeout: must not be negative, got '-1s'"],
            id="duration-negative",
        ),
        pytest.param(
            "probe: {interval: 0}",
            {},
            ["probe.interval: must be at least 100ms"],
            id="interval-zero",
        ),
        pytest.param(
            "probe: {not_found_grace: 0, concurrency: many}",
            {},
            [
                "probe.not_found_grace: must be at least 1, got 0",
                "probe.concurrency: must be a whole number, got 'many'",
            ],
            id="counts",
        ),
        pytest.param(
            "probe: {max_body_bytes: 4MB}",
            {},
            [
                "probe.max_body_bytes: invalid size '4MB':"
                " use e.g. 4MiB, 512KiB, or a number of bytes"
            ],
            id="size",
        ),
        pytest.param("probe: 5", {}, ["probe: must be a mapping, got 5"], id="section-scalar"),
        pytest.param("targets: {}", {}, ["targets: must be a list, got a mapping"], id="targets"),
        pytest.param("state: {path: ''}", {}, ["state.path: must not be empty"], id="state-path"),
        pytest.param(
            "logging: {level: verbose, format: text}",
            {},
            [
                "logging.level: must be one of 'debug', 'info', 'warning' or 'error',"
                " got 'verbose'",
                "logging.format: must be one of 'json', 'console' or 'auto', got 'text'",
            ],
            id="logging",
        ),
        pytest.param(
            "probe:\n  interval: 10s\n  timeout: 5s: 3\n",
            {},
            [
                "config file flink-probe.yaml: invalid YAML at line 3, column 14:"
                " mapping values are not allowed here"
            ],
            id="yaml",
        ),
        pytest.param(
            "probe: {interval: 20s}\nserver: {}\nprobe: {timeout: 1s}\n",
            {},
            [
                "config file flink-probe.yaml: invalid YAML at line 3, column 1:"
                " duplicate key 'probe'"
            ],
            id="yaml-duplicate-section",
        ),
        pytest.param(
            "targets: [{name: a, url: 'http://a', name: b}]",
            {},
            [
                "config file flink-probe.yaml: invalid YAML at line 1, column 38:"
                " duplicate key 'name'"
            ],
            id="yaml-duplicate-key",
        ),
        pytest.param(
            "- probe",
            {},
            [
                "config file flink-probe.yaml: top level must be a mapping of sections"
                " (server, probe, state, logging, events, targets, jobs, targets_files,"
                " targets_refresh, targets_http, enrollment), got a list"
            ],
            id="top-level-list",
        ),
        pytest.param(
            "",
            {"FLINK_PROBE_PROBE__INTERVALL": "5s", "FLINK_PROBE_SERVR__LISTEN": ":1"},
            [
                "FLINK_PROBE_PROBE__INTERVALL: unknown setting",
                "FLINK_PROBE_SERVR__LISTEN: unknown setting",
            ],
            id="env-typo",
        ),
        pytest.param(
            "",
            {"FLINK_PROBE_TARGETS__0__URL": "http://x", "FLINK_PROBE_": "1"},
            ["FLINK_PROBE_: unknown setting", "FLINK_PROBE_TARGETS__0__URL: unknown setting"],
            id="env-unknown-shapes",
        ),
        pytest.param(
            "",
            {"FLINK_PROBE_PROBE": '{"interval": "5s"}'},
            ["FLINK_PROBE_PROBE: set one key, e.g. FLINK_PROBE_PROBE__INTERVAL"],
            id="env-whole-section",
        ),
        pytest.param(
            "",
            {"FLINK_PROBE_PROBE__INTERVAL": "soon"},
            [
                f"probe.interval: invalid duration 'soon': {DURATION_HINT}"
                " (from FLINK_PROBE_PROBE__INTERVAL)"
            ],
            id="env-bad-value",
        ),
        pytest.param(
            "",
            {"FLINK_PROBE_TARGETS": "[{"},
            [
                "FLINK_PROBE_TARGETS: invalid JSON: Expecting property name enclosed in double"
                " quotes: line 1 column 3 (char 2)"
            ],
            id="env-bad-json",
        ),
        pytest.param(
            "",
            {"FLINK_PROBE_JOBS": '{"id": "x"}'},
            ["FLINK_PROBE_JOBS: must be a JSON list, got a mapping"],
            id="env-json-not-list",
        ),
        pytest.param(
            "",
            {"FLINK_PROBE_TARGETS": '[{"name": "a", "url": "ftp://a"}]'},
            [
                "targets[0].url: must be an http(s) URL with a host, got 'ftp://a'"
                " (from FLINK_PROBE_TARGETS)"
            ],
            id="env-list-item",
        ),
        pytest.param(
            "probe: {intervall: 1s}\ntargets: [{name: a, url: 'x'}]",
            {"FLINK_PROBE_LOGGING__LEVL": "debug"},
            [
                "FLINK_PROBE_LOGGING__LEVL: unknown setting",
                "probe.intervall: unknown key",
                "targets[0].url: must be an http(s) URL with a host, got 'x'",
            ],
            id="all-at-once",
        ),
        pytest.param(
            None,
            {"FLINK_PROBE_CONFIG": "/nonexistent/flink-probe.yaml"},
            ["config file /nonexistent/flink-probe.yaml: not found"],
            id="file-not-found",
        ),
    ],
)
def test_each_mistake_is_one_line_naming_its_key(
    text: str | None, environ: dict[str, str], expected: list[str]
) -> None:
    lines = error_lines(text, environ)

    assert lines == expected
    assert all("\n" not in line for line in lines)


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path, environ={})

    assert raised.value.errors == [f"config file {tmp_path}: cannot read: Is a directory"]


def test_yaml_anchors_and_merge_keys_may_be_overridden() -> None:
    config = load_text(
        "targets:\n"
        "  - &common {name: a, url: 'http://a:8081', namespace: team}\n"
        "  - {<<: *common, name: b}\n"
    )

    assert [(target.name, target.namespace) for target in config.targets] == [
        ("a", "team"),
        ("b", "team"),
    ]


def test_a_file_that_is_not_utf8_is_refused() -> None:
    Path("latin1.yaml").write_bytes("logging: {level: d\xe9bug}\n".encode("latin-1"))

    with pytest.raises(ConfigError) as raised:
        load_config(Path("latin1.yaml"), environ={})

    assert raised.value.errors == ["config file latin1.yaml: not UTF-8 text"]


def test_a_config_error_reads_as_its_lines() -> None:
    error = ConfigError(["a: x", "b: y"])

    assert str(error) == "a: x\nb: y"


# --- absurd values --------------------------------------------------------------------------

TOO_DEEP = "nested too deeply (more than 100 levels)"
DEEP_SPEC = "[" * 150 + "]" * 150


def job_with_spec(spec: str) -> str:
    return TARGET_A + f"jobs: [{{id: {JOB_ID}, target: local, deployment: d, spec: {spec}}}]\n"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[" * 100_000, id="beyond-the-recursion-limit"),
        pytest.param("probe: " + "{a: " * 100_000, id="mappings"),
        pytest.param(job_with_spec(f"{{x: {DEEP_SPEC}}}"), id="within-the-recursion-limit"),
        pytest.param(job_with_spec("{x: &loop [*loop]}"), id="a-list-inside-itself"),
        pytest.param(job_with_spec("&loop {x: *loop}"), id="a-mapping-inside-itself"),
    ],
)
def test_a_deeply_nested_file_is_one_line(text: str) -> None:
    assert error_lines(text) == [f"config file flink-probe.yaml: {TOO_DEEP}"]


def test_nesting_up_to_the_limit_loads_and_dumps() -> None:
    spec = "[" * 96 + "]" * 96  # jobs, its item, spec, x: 100 levels in all
    config = load_text(job_with_spec(f"{{x: {spec}}}"))

    assert load_text(dump_effective(config)) == config


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        pytest.param("FLINK_PROBE_TARGETS", "[" * 100_000, id="beyond-the-recursion-limit"),
        pytest.param("FLINK_PROBE_JOBS", DEEP_SPEC, id="within-the-recursion-limit"),
    ],
)
def test_deeply_nested_json_in_the_environment_is_one_line(variable: str, text: str) -> None:
    assert error_lines("", {variable: text}) == [f"{variable}: {TOO_DEEP}"]


@pytest.mark.parametrize("text", ["[" * 100_000, f"users: {DEEP_SPEC}"])
def test_a_deeply_nested_web_config_is_one_line(text: str) -> None:
    Path("web.yml").write_text(text)

    assert error_lines("server: {web_config: web.yml}") == [
        f"server.web_config: web.yml: {TOO_DEEP}"
    ]


ABSURD_DURATIONS = {
    "interval-subnormal": ("probe: {interval: 1e-320}", "probe.interval: must be at least 100ms"),
    "interval-1ns": ("probe: {interval: 0.000000001s}", "probe.interval: must be at least 100ms"),
    "interval-99ms": ("probe: {interval: 99ms}", "probe.interval: must be at least 100ms"),
    "interval-huge": ("probe: {interval: 1e300}", "probe.interval: must be at most 3650d"),
    "refresh-subnormal": (
        "probe: {metrics_refresh: 1e-320}",
        "probe.metrics_refresh: must be 0 or at least 1ms",
    ),
    "start-timeout-huge": (
        "probe: {start_timeout: 1e300h}",
        "probe.start_timeout: must be at most 3650d",
    ),
    "retention-subnormal": (
        "probe: {metrics_retention: 1e-320}",
        "probe.metrics_retention: must be at least 1ms",
    ),
    "overflowing-number": (
        "probe: {start_timeout: 1e400}",
        f"probe.start_timeout: invalid duration '1e400': {DURATION_HINT}",
    ),
    "infinity": (
        "probe: {metrics_retention: .inf}",
        f"probe.metrics_retention: invalid duration inf: {DURATION_HINT}",
    ),
    "nan": (
        "probe: {metrics_refresh: .nan}",
        f"probe.metrics_refresh: invalid duration nan: {DURATION_HINT}",
    ),
    "max-age-huge": (
        TARGET_A.replace("}]", ", metrics_max_age: 1e308}]"),
        "targets[0].metrics_max_age: must be at most 3650d",
    ),
    "max-age-subnormal": (
        TARGET_A.replace("}]", ", overview_max_age: 1e-320}]"),
        "targets[0].overview_max_age: must be 0 or at least 1ms",
    ),
}


@pytest.mark.parametrize(
    ("text", "expected"), ABSURD_DURATIONS.values(), ids=ABSURD_DURATIONS.keys()
)
def test_absurd_durations_are_one_line(text: str, expected: str) -> None:
    assert error_lines(text) == [expected]


def test_durations_at_their_bounds_load() -> None:
    config = load_text(
        "probe: {interval: 100ms, timeout: 1ms, metrics_refresh: 1ms, start_timeout: 3650d}"
    )

    assert (config.probe.interval, config.probe.timeout) == (0.1, 0.001)
    assert (config.probe.metrics_refresh, config.probe.start_timeout) == (0.001, 87600 * 3600)


# --- environment ----------------------------------------------------------------------------


def test_environment_overrides_one_key_and_keeps_the_rest_of_the_file() -> None:
    config = load_text(
        "server: {listen: '0.0.0.0:9000'}\nprobe: {interval: 20s, timeout: 4s}\n",
        {
            "FLINK_PROBE_PROBE__INTERVAL": "5s",
            "FLINK_PROBE_SERVER__LISTEN": "127.0.0.1:9999",
            "FLINK_PROBE_STATE__PATH": "/x.db",
            "FLINK_PROBE_PROBE__NOT_FOUND_GRACE": "5",
            "FLINK_PROBE_PROBE__MAX_BODY_BYTES": "512KiB",
            "FLINK_PROBE_LOGGING__FORMAT": "console",
            "FLINK_PROBE_CONFIG": "/ignored/when/a/path/is/given.yaml",
            "UNRELATED": "1",
        },
    )

    assert (config.server.host, config.server.port) == ("127.0.0.1", 9999)
    assert config.probe.interval == 5.0
    assert config.probe.timeout == 4.0  # from the file
    assert config.probe.not_found_grace == 5
    assert config.probe.max_body_bytes == 512 * 1024
    assert config.state.path == Path("/x.db")
    assert config.logging.format == "console"


def test_environment_replaces_lists_with_json() -> None:
    targets = [{"name": "env", "url": "http://env:8081", "headers": {"Authorization": "Bearer t"}}]
    jobs = [{"id": JOB_ID, "target": "env", "deployment": "orders"}]

    config = load_text(
        "targets: [{name: file, url: 'http://file:8081'}]\n",
        {"FLINK_PROBE_TARGETS": json.dumps(targets), "FLINK_PROBE_JOBS": json.dumps(jobs)},
    )

    assert [target.name for target in config.targets] == ["env"]
    assert config.targets[0].headers == {"Authorization": "Bearer t"}
    assert [job.id for job in config.jobs] == [JOB_ID]


def test_environment_overrides_the_sidecar_default() -> None:
    config = load_config(
        None,
        environ={
            "FLINK_PROBE_TARGETS": '[{"name": "jm", "url": "http://jm:8081", "discover": true}]',
            "FLINK_PROBE_PROBE__INTERVAL": "2s",
            "FLINK_PROBE_PROBE__TIMEOUT": "1s",
        },
    )

    assert [(target.name, target.discover) for target in config.targets] == [("jm", True)]
    assert config.targets[0].metrics_max_age == 12.0


def test_environment_sets_the_keys_of_targets_that_come_and_go() -> None:
    config = load_text(
        "targets_http: {url: 'http://sd.example/targets'}\n",
        {
            "FLINK_PROBE_TARGETS_REFRESH": "5s",
            "FLINK_PROBE_TARGETS_FILES": '["/srv/targets/*.json"]',
            "FLINK_PROBE_TARGETS_HTTP__REFRESH": "1m",
            "FLINK_PROBE_ENROLLMENT__ALLOW": '["http://jm-[a-z]+:8081/"]',
            "FLINK_PROBE_ENROLLMENT__TTL": "1h",
        },
    )

    assert config.targets_refresh == 5.0
    assert config.targets_files == ["/srv/targets/*.json"]
    assert config.targets_http == TargetsHttpConfig(url="http://sd.example/targets", refresh=60.0)
    assert config.enrollment.allows("http://jm-orders:8081/", "jm-orders:8081")
    assert config.enrollment.ttl == 3600.0


def test_http_sd_may_be_set_by_the_environment_alone() -> None:
    config = load_text("", {"FLINK_PROBE_TARGETS_HTTP__URL": "http://sd.example/targets"})

    assert config.targets_http == TargetsHttpConfig(url="http://sd.example/targets")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"FLINK_PROBE_TARGETS_HTTP": "http://sd.example/"},
            "FLINK_PROBE_TARGETS_HTTP: set one key, e.g. FLINK_PROBE_TARGETS_HTTP__URL",
        ),
        (
            {"FLINK_PROBE_TARGETS_FILES": "/srv/targets/*.json"},
            "FLINK_PROBE_TARGETS_FILES: invalid JSON: Expecting value: line 1 column 1 (char 0)",
        ),
        (
            {"FLINK_PROBE_ENROLLMENT__PROFILES": "[]"},
            "FLINK_PROBE_ENROLLMENT__PROFILES: must be a JSON object, got a list",
        ),
        (
            {"FLINK_PROBE_TARGETS_REFRESH": "0s"},
            "targets_refresh: must be at least 1ms (from FLINK_PROBE_TARGETS_REFRESH)",
        ),
    ],
)
def test_environment_mistakes_about_dynamic_targets_are_one_line(
    environ: dict[str, str], expected: str
) -> None:
    assert error_lines("", environ) == [expected]


def test_relative_targets_globs_are_taken_from_the_config_files_directory(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = Path("etc/flink-probe.yaml")  # relative to the working directory, tmp_path
    path.write_text("targets_files: [targets/*.yml, /srv/targets/*.json, '~/targets/*.yaml']\n")

    config = load_config(path, environ={})

    assert config.targets_files == [
        f"{tmp_path}/etc/targets/*.yml",
        "/srv/targets/*.json",
        "~/targets/*.yaml",
    ]


@pytest.mark.parametrize(
    ("state_directory", "path", "expected"),
    [
        ("/var/lib/flink-probe", "flink-probe.db", "/var/lib/flink-probe/flink-probe.db"),
        ("/var/lib/a:/var/lib/b", "sub/probe.db", "/var/lib/a/sub/probe.db"),
        ("/var/lib/flink-probe", "/srv/probe.db", "/srv/probe.db"),
    ],
)
def test_a_relative_state_path_lies_in_the_systemd_state_directory(
    state_directory: str, path: str, expected: str
) -> None:
    config = load_text(f"state: {{path: {path}}}", {"STATE_DIRECTORY": state_directory})

    assert config.state.path == Path(expected)


def test_without_state_directory_a_relative_state_path_is_in_the_working_directory(
    tmp_path: Path,
) -> None:
    config = load_text("state: {path: data/probe.db}", {"STATE_DIRECTORY": ""})

    assert config.state.path == tmp_path / "data" / "probe.db"


# --- the shared store -----------------------------------------------------------------------


def test_state_url_names_a_postgresql_store_with_its_password_from_a_file() -> None:
    Path("db-password").write_text("s3cret\n")

    config = load_text(
        "probe: {interval: 2s, timeout: 1s}\n"
        "state:\n"
        "  url: postgresql://probe@db.example:5432/flink_probe?sslmode=verify-full\n"
        "  password_file: db-password\n"
        "  instance: probe-0\n"
    )

    state = config.state
    assert state.location == "postgresql://probe@db.example:5432/flink_probe?sslmode=verify-full"
    assert (state.path, state.shared, state.password, state.instance) == (
        None,
        True,
        "s3cret",
        "probe-0",
    )
    # The defaults: three intervals of lease, and a second of clock skew between daemons.
    assert (state.lease_ttl, state.max_clock_skew) == (6.0, 1.0)
    assert "s3cret" not in dump_effective(config)


def test_the_state_password_may_come_from_the_environment() -> None:
    config = load_text(
        "state: {url: 'postgresql://probe@db/flink_probe', password_env: DB_PASSWORD}",
        {"DB_PASSWORD": "s3cret"},
    )

    assert config.state.password == "s3cret"


def test_without_a_password_setting_libpq_finds_one() -> None:
    config = load_text("state: {url: 'postgres://probe@db/flink_probe'}")

    assert (config.state.shared, config.state.password) == (True, None)


def test_a_sqlite_url_is_the_sqlite_store() -> None:
    config = load_text("state: {url: 'sqlite:///var/lib/flink-probe/state.db'}")

    assert (config.state.location, config.state.shared) == (
        "sqlite:///var/lib/flink-probe/state.db",
        False,
    )


def test_lease_settings_take_durations() -> None:
    config = load_text(
        "probe: {interval: 2s, timeout: 1s}\nstate: {lease_ttl: 4s, max_clock_skew: 250ms}",
        {"FLINK_PROBE_STATE__INSTANCE": "replica-a"},
    )

    assert (config.state.lease_ttl, config.state.max_clock_skew) == (4.0, 0.25)
    assert config.state.instance == "replica-a"


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        pytest.param(
            "state: {path: probe.db, url: 'postgresql://probe@db/flink_probe'}",
            {},
            ["state.url: set one of path and url, not both"],
            id="path-and-url",
        ),
        pytest.param(
            "state: {path: probe.db}",
            {"FLINK_PROBE_STATE__URL": "postgresql://probe@db/flink_probe"},
            ["state.url: set one of path and url, not both (from FLINK_PROBE_STATE__URL)"],
            id="url-from-the-environment-beside-a-path",
        ),
        pytest.param(
            "state: {url: 'postgresql://probe:hunter2@db/flink_probe'}",
            {},
            [
                "state.url: put the password in state.password_file or state.password_env,"
                " not in the URL"
            ],
            id="password-in-the-url",
        ),
        pytest.param(
            "state: {url: 'postgresql://probe@db/flink_probe?sslmode=require&password=hunter2'}",
            {},
            [
                "state.url: put the password in state.password_file or state.password_env,"
                " not in the URL"
            ],
            id="password-in-the-query",
        ),
        pytest.param(
            "state: {url: 'postgresql://probe@db/flink_probe', password: hunter2}",
            {},
            [
                "state.password: secrets are never written in the configuration:"
                " use password_file or password_env"
            ],
            id="inline-password",
        ),
        pytest.param(
            "state: {url: 'postgresql://probe@db/f', password_file: p, password_env: P}",
            {"P": "hunter2"},
            ["state.password_env: set one of password_file and password_env, not both"],
            id="two-passwords",
        ),
        pytest.param(
            "state: {password_env: P}",
            {"P": "hunter2"},
            ["state.password_env: only a postgresql:// url takes a password (SQLite has none)"],
            id="password-with-sqlite",
        ),
        pytest.param(
            "state: {url: 'sqlite:///state.db', password_file: p}",
            {},
            ["state.password_file: only a postgresql:// url takes a password (SQLite has none)"],
            id="password-with-a-sqlite-url",
        ),
        pytest.param(
            "state: {url: 'postgresql://probe@db/flink_probe', password_env: P}",
            {},
            ["state.password_env: environment variable P is not set"],
            id="password-variable-unset",
        ),
        pytest.param(
            "state: {url: 'mysql://probe@db/flink_probe'}",
            {},
            [
                "state.url: must be sqlite:///path or postgresql://user@host:port/dbname,"
                " got 'mysql://probe@db/flink_probe'"
            ],
            id="unknown-scheme",
        ),
        pytest.param(
            "state: {url: 'sqlite://state.db'}",
            {},
            ["state.url: write a SQLite file as sqlite:///absolute/path, got 'sqlite://state.db'"],
            id="relative-sqlite-url",
        ),
        pytest.param(
            "probe: {interval: 10s}\nstate: {lease_ttl: 15s}",
            {},
            ["state.lease_ttl: must be at least 2 x probe.interval (15s < 20s)"],
            id="lease-shorter-than-two-intervals",
        ),
        pytest.param(
            "state: {instance: 'probe 0'}",
            {},
            ["state.instance: must match [A-Za-z0-9_.-]+, got 'probe 0'"],
            id="instance-name",
        ),
    ],
)
def test_state_mistakes_are_one_line_naming_the_key(
    text: str, environ: dict[str, str], expected: list[str]
) -> None:
    lines = error_lines(text, environ)

    assert lines == expected
    assert not any("hunter2" in line for line in lines)


# --- the example file -----------------------------------------------------------------------


def example_with_its_files(directory: Path) -> Path:
    """The example file, its /etc/flink-probe/ files made in `directory`."""
    authority = Authority.create(directory, "prod")
    authority.cert.rename(directory / "prod-ca.pem")
    client = authority.issue("prod-client", server=False)
    (directory / "prod-password").write_text("example-password\n")
    (directory / "staging-token").write_text("example-token")
    path = directory / "example.yaml"
    path.write_text(EXAMPLE.read_text().replace("/etc/flink-probe/", f"{directory}/"))
    assert (client.cert.name, client.key.name) == ("prod-client.pem", "prod-client.key")
    return path


def test_the_example_file_loads(tmp_path: Path) -> None:
    path = example_with_its_files(tmp_path)

    config = load_config(path, environ={"ANALYTICS_FLINK_TOKEN": "example-env-token"})

    assert [(target.name, target.discover) for target in config.targets] == [
        ("local", True),
        ("prod", False),
        ("staging", False),
        ("analytics", False),
    ]
    _, prod, staging, analytics = config.targets
    assert prod.url == "https://flink.example.com/prod-cluster/"
    assert prod.credentials() == BasicCredentials("flink-probe", "example-password")
    assert staging.credentials() == BearerToken("example-token")
    assert analytics.credentials() == BearerToken("example-env-token")
    assert [(job.target, job.deployment) for job in config.jobs] == [
        ("prod", "orders"),
        ("prod", "payments"),
    ]
    assert config.targets_files == [f"{tmp_path}/targets/*.yml"]
    profiles = config.enrollment.profiles
    assert profiles["internal-ca"].template.credentials() == BasicCredentials(
        "flink-probe", "example-password"
    )
    assert profiles["internal-ca"].template.ssl_context is not None
    assert profiles["oauth"].template.credentials() == BearerToken("example-token")
    assert profiles["oauth-env"].template.credentials() == BearerToken("example-env-token")


def _missing_keys(model: type[BaseModel], shown: list[Mapping[str, Any]], where: str) -> list[str]:
    """Keys of `model` that none of the `shown` mappings of the example spells out."""
    missing = []
    for name, field in model.model_fields.items():
        values = [mapping[name] for mapping in shown if name in mapping]
        if not values:
            missing.append(f"{where}{name}")
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            missing += _missing_keys(field.annotation, values, f"{where}{name}.")
    return missing


def test_the_postgresql_example_file_loads(tmp_path: Path) -> None:
    (tmp_path / "postgres-password").write_text("example-password\n")
    path = tmp_path / POSTGRESQL_EXAMPLE.name
    path.write_text(POSTGRESQL_EXAMPLE.read_text().replace("/etc/flink-probe/", f"{tmp_path}/"))

    state = load_config(path, environ={}).state

    assert (state.shared, state.password, state.instance) == (
        True,
        "example-password",
        "flink-probe-0",
    )


def test_the_example_files_show_every_key() -> None:
    """config/example.yaml shows every key; its PostgreSQL companion the state keys of a shared
    store (one file cannot set both state.path and state.url, nor both password sources)."""
    example = yaml.safe_load(EXAMPLE.read_text())
    postgresql = yaml.safe_load(POSTGRESQL_EXAMPLE.read_text())

    missing = (
        _missing_keys(Config, [example, postgresql], "")
        + _missing_keys(TargetConfig, example["targets"], "targets[].")
        + _missing_keys(JobConfig, example["jobs"], "jobs[].")
        + _missing_keys(TargetsHttpConfig, [example["targets_http"]], "targets_http.")
        + _missing_keys(
            ProfileConfig,
            list(example["enrollment"]["profiles"].values()),
            "enrollment.profiles.<name>.",
        )
    )

    assert missing == ["state.password_env"]  # named in the comment beside password_file


# --- the effective configuration ------------------------------------------------------------


def test_dump_redacts_header_values_and_url_passwords() -> None:
    config = load_text(
        "targets:\n"
        "  - {name: a, url: 'https://admin:s3cret@flink:8443/base'}\n"
        "  - name: b\n"
        "    url: 'https://flink:8443'\n"
        "    headers: {Authorization: Bearer t0ken, X-Tenant: blue}\n"
        "  - {name: c, url: 'http://viewer@flink:8081'}\n"
    )

    dumped = dump_effective(config)

    assert "s3cret" not in dumped
    assert "t0ken" not in dumped
    targets = yaml.safe_load(dumped)["targets"]
    assert targets[0]["url"] == "https://admin:***@flink:8443/base/"
    assert targets[1]["headers"] == {"Authorization": "<redacted>", "X-Tenant": "<redacted>"}
    assert targets[2]["url"] == "http://viewer@flink:8081/"
    # The daemon still has the secrets.
    assert config.targets[1].headers["Authorization"] == "Bearer t0ken"


def test_dump_redacts_a_password_in_the_http_sd_url() -> None:
    config = load_text("targets_http: {url: 'https://sd:s3cret@sd.example/targets?team=a'}\n")

    dumped = dump_effective(config)

    assert "s3cret" not in dumped
    assert (
        yaml.safe_load(dumped)["targets_http"]["url"] == "https://sd:***@sd.example/targets?team=a"
    )
    assert config.targets_http is not None
    assert config.targets_http.url == "https://sd:s3cret@sd.example/targets?team=a"


def test_dump_writes_durations_and_sizes_as_people_do() -> None:
    config = load_text("probe: {interval: 1.5, timeout: 0.5, max_body_bytes: 524288}")

    probe = redacted_dict(config)["probe"]

    assert (probe["interval"], probe["timeout"], probe["start_timeout"]) == ("1.5s", "500ms", "10m")
    assert probe["max_body_bytes"] == "512KiB"


def test_the_dump_of_a_config_without_secrets_loads_back_as_the_same_config() -> None:
    config = load_config(
        EXAMPLE,
        environ={
            "FLINK_PROBE_TARGETS": '[{"name": "prod", "url": "http://prod:8081"}]',
            "FLINK_PROBE_ENROLLMENT__PROFILES": "{}",
            "FLINK_PROBE_PROBE__INTERVAL": "2.5s",
            "FLINK_PROBE_PROBE__TIMEOUT": "700ms",
        },
    )

    assert load_text(dump_effective(config)) == config


# --- secrets and TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.create(tmp_path_factory.mktemp("pki"), "config")


def one_target(*others: Mapping[str, object], **settings: object) -> str:
    """A config text with target ``a`` (https) of `settings`, then the `others`."""
    target = {"name": "a", "url": "https://a:8443", **settings}
    return yaml.safe_dump({"targets": [target, *others]})


@pytest.mark.parametrize(
    ("settings", "environ", "expected"),
    [
        pytest.param(
            {"tls": {"ca_file": "/nonexistent/ca.pem"}},
            {},
            "targets[0].tls.ca_file: cannot read /nonexistent/ca.pem: No such file or directory",
            id="ca-file-missing",
        ),
        pytest.param(
            {"tls": {"ca_file": "flink-probe.yaml"}},
            {},
            "targets[0].tls.ca_file: flink-probe.yaml holds no PEM certificate"
            " (-----BEGIN CERTIFICATE-----)",
            id="ca-file-not-pem",
        ),
        pytest.param(
            {"tls": {"cert_file": "client.pem"}},
            {},
            "targets[0].tls.key_file: required with cert_file",
            id="cert-without-key",
        ),
        pytest.param(
            {"tls": {"ca_file": ""}},
            {},
            "targets[0].tls.ca_file: must not be empty",
            id="empty-path",
        ),
        pytest.param(
            {"url": "http://a:8081", "tls": {"insecure_skip_verify": True}},
            {},
            "targets[0].tls: needs an https:// url, got 'http://a:8081/'",
            id="tls-on-http",
        ),
        pytest.param(
            {"basic_auth": {"username": "probe", "password": "hunter2"}},
            {},
            "targets[0].basic_auth.password: secrets are never written in the configuration:"
            " use password_file or password_env",
            id="inline-password",
        ),
        pytest.param(
            {"bearer_token": "t0ken"},
            {},
            "targets[0].bearer_token: secrets are never written in the configuration:"
            " use bearer_token_file or bearer_token_env",
            id="inline-token",
        ),
        pytest.param(
            {"basic_auth": {"username": "probe"}},
            {},
            "targets[0].basic_auth.password_file: set password_file or password_env"
            " (the password is never written in the configuration)",
            id="no-password",
        ),
        pytest.param(
            {"basic_auth": {"username": "probe", "password_file": "pw", "password_env": "PW"}},
            {"PW": "x"},
            "targets[0].basic_auth.password_env: set one of password_file and password_env,"
            " not both",
            id="password-twice",
        ),
        pytest.param(
            {"basic_auth": {"username": "a:b", "password_env": "PW"}},
            {"PW": "x"},
            "targets[0].basic_auth.username: must not contain ':'"
            " (basic credentials are user:password)",
            id="username-colon",
        ),
        pytest.param(
            {"bearer_token_env": "TOKEN"},
            {},
            "targets[0].bearer_token_env: environment variable TOKEN is not set",
            id="env-unset",
        ),
        pytest.param(
            {"bearer_token_env": "TOKEN"},
            {"TOKEN": "  "},
            "targets[0].bearer_token_env: environment variable TOKEN is empty",
            id="env-empty",
        ),
        pytest.param(
            {"bearer_token_env": "TOKEN"},
            {"TOKEN": "two\nlines"},
            "targets[0].bearer_token_env: environment variable TOKEN holds more than one line",
            id="env-two-lines",
        ),
        pytest.param(
            {"bearer_token_env": "FLINK_PROBE_TOKEN"},
            {},
            "targets[0].bearer_token_env: must not start with FLINK_PROBE_"
            " (that prefix is for settings)",
            id="env-reserved-prefix",
        ),
        pytest.param(
            {"bearer_token_file": "/nonexistent/token"},
            {},
            "targets[0].bearer_token_file: cannot read /nonexistent/token:"
            " No such file or directory",
            id="token-file-missing",
        ),
        pytest.param(
            {"bearer_token_env": "T", "basic_auth": {"username": "u", "password_env": "T"}},
            {"T": "x"},
            "targets[0]: set one kind of credentials, not basic_auth and bearer_token_file/_env",
            id="two-kinds-of-credentials",
        ),
        pytest.param(
            {"bearer_token_env": "T", "headers": {"authorization": "Basic eDp5"}},
            {"T": "x"},
            "targets[0]: set one kind of credentials,"
            " not bearer_token_file/_env and an Authorization header",
            id="token-and-header",
        ),
    ],
)
def test_secret_and_tls_mistakes_are_one_line_naming_the_key(
    settings: dict[str, object], environ: dict[str, str], expected: str
) -> None:
    lines = error_lines(one_target(**settings), environ)

    assert lines == [expected]
    assert not any(secret in line for line in lines for secret in ("hunter2", "t0ken"))


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    Path("token").write_text("\n")

    assert error_lines(one_target(bearer_token_file="token")) == [
        "targets[0].bearer_token_file: token is empty"
    ]


def test_a_client_key_that_is_not_the_certificates_is_refused(authority: Authority) -> None:
    first = authority.issue("first", server=False)
    second = authority.issue("second", server=False)

    [line] = error_lines(
        one_target(tls={"cert_file": str(first.cert), "key_file": str(second.key)})
    )

    assert line.startswith(f"targets[0].tls.key_file: {second.key} is not the key of {first.cert}")


def test_an_encrypted_client_key_is_refused_without_prompting(authority: Authority) -> None:
    pair = authority.issue("encrypted", server=False)
    pair.key.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n")

    assert error_lines(
        one_target(tls={"cert_file": str(pair.cert), "key_file": str(pair.key)})
    ) == [f"targets[0].tls.key_file: {pair.key} is encrypted; flink-probe needs an unencrypted key"]


def test_the_dump_names_secret_files_and_variables_but_not_secrets(
    authority: Authority,
) -> None:
    pair = authority.issue("client", server=False)
    Path("password").write_text("pa55word")
    config = load_text(
        one_target(
            {"name": "b", "url": "http://b:8081", "bearer_token_env": "B_TOKEN"},
            basic_auth={"username": "probe", "password_file": "password"},
            tls={
                "ca_file": str(authority.cert),
                "cert_file": str(pair.cert),
                "key_file": str(pair.key),
            },
        ),
        environ={"B_TOKEN": "t0ken-b"},
    )

    dumped = dump_effective(config)

    assert "pa55word" not in dumped
    assert "t0ken-b" not in dumped
    targets = yaml.safe_load(dumped)["targets"]
    assert targets[0]["basic_auth"] == {
        "username": "probe",
        "password_file": "password",
        "password_env": None,
    }
    assert targets[0]["tls"]["ca_file"] == str(authority.cert)
    assert targets[1]["bearer_token_env"] == "B_TOKEN"
    assert "pa55word" not in repr(config)
    assert "t0ken-b" not in repr(config)
    # The daemon still has them.
    assert config.targets[0].credentials() == BasicCredentials("probe", "pa55word")
    assert config.targets[1].credentials() == BearerToken("t0ken-b")


def test_a_dump_with_secret_files_loads_back_as_the_same_config(authority: Authority) -> None:
    Path("password").write_text("pa55word")
    config = load_text(
        one_target(
            basic_auth={"username": "probe", "password_file": "password"},
            tls={"ca_file": str(authority.cert)},
        )
    )

    assert load_text(dump_effective(config)) == config


# --- server.web_config ----------------------------------------------------------------------


def web_config_errors(document: object) -> list[str]:
    Path("web.yml").write_text(yaml.safe_dump(document))
    lines = error_lines("server: {web_config: web.yml}")
    prefix = "server.web_config: web.yml: "
    assert all(line.startswith(prefix) for line in lines), lines
    return [line.removeprefix(prefix) for line in lines]


HASH = "$2b$04$" + "a" * 53


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param(
            {"basic_auth_users": {"alice": HASH}, "rate_limit": {}},
            ["rate_limit: not supported by flink-probe"],
            id="unsupported-toolkit-key",
        ),
        pytest.param(
            {"tls_server_config": {"cert_file": "s.pem", "key_file": "s.key", "cipher_suites": []}},
            ["tls_server_config.cipher_suites: not supported by flink-probe"],
            id="unsupported-tls-key",
        ),
        pytest.param(
            {"basic_auth_user": {}},
            ["basic_auth_user: unknown key"],
            id="unknown-key",
        ),
        pytest.param(
            {"basic_auth_users": {"alice": "plain-password"}},
            [
                "basic_auth_users.alice: must be a bcrypt hash ($2b$<cost>$<53 characters>,"
                " see htpasswd -B)"
            ],
            id="not-a-hash",
        ),
        pytest.param(
            {"basic_auth_users": {"a:b": HASH}},
            ["basic_auth_users.a:b: user name 'a:b' must not contain ':'"],
            id="user-with-colon",
        ),
        pytest.param(
            {"tls_server_config": {"cert_file": "s.pem"}},
            ["tls_server_config.key_file: required key is missing"],
            id="key-missing",
        ),
        pytest.param(
            {
                "tls_server_config": {
                    "cert_file": "s.pem",
                    "key_file": "s.key",
                    "min_version": "TLS11",
                }
            },
            ["tls_server_config.min_version: must be one of 'TLS12' or 'TLS13', got 'TLS11'"],
            id="old-tls",
        ),
        pytest.param(
            {"tls_server_config": {"cert_file": "s.pem", "key_file": "s.key"}},
            # web.yml is in the working directory, and so is s.pem.
            ["tls_server_config.cert_file: cannot read s.pem: No such file or directory"],
            id="cert-missing",
        ),
        pytest.param(
            {
                "tls_server_config": {
                    "cert_file": "s.pem",
                    "key_file": "s.key",
                    "client_auth_type": "RequireAnyClientCert",
                }
            },
            [
                "tls_server_config.client_auth_type: RequireAnyClientCert accepts a client"
                " certificate without verifying it, which flink-probe cannot do; use"
                " VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
            ],
            id="unverified-client-certificates",
        ),
        pytest.param(
            {
                "tls_server_config": {
                    "cert_file": "s.pem",
                    "key_file": "s.key",
                    "client_auth_type": "RequireAndVerifyClientCert",
                }
            },
            [
                "tls_server_config.client_ca_file: required by client_auth_type"
                " RequireAndVerifyClientCert (the CA client certificates are checked against)"
            ],
            id="client-ca-missing",
        ),
        pytest.param(
            {
                "tls_server_config": {
                    "cert_file": "s.pem",
                    "key_file": "s.key",
                    "client_ca_file": "ca.pem",
                }
            },
            [
                "tls_server_config.client_ca_file: is set, but client_auth_type is NoClientCert;"
                " set client_auth_type to VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ],
            id="client-ca-without-client-auth",
        ),
    ],
)
def test_web_config_mistakes_are_lines_naming_the_file_and_key(
    document: object, expected: list[str]
) -> None:
    assert web_config_errors(document) == expected


def test_a_missing_web_config_file_is_named() -> None:
    assert error_lines("server: {web_config: /nonexistent/web.yml}") == [
        "server.web_config: /nonexistent/web.yml: not found"
    ]


def test_web_config_paths_are_relative_to_its_file(authority: Authority, tmp_path: Path) -> None:
    web = tmp_path / "web"
    web.mkdir()
    pair = authority.issue("server", server=True)
    for source in (pair.cert, pair.key):
        (web / source.name).write_bytes(source.read_bytes())
    (web / "web.yml").write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": "server.pem", "key_file": "server.key"},
                "basic_auth_users": {"prometheus": HASH},
            }
        )
    )

    security = load_text("server: {web_config: web/web.yml}").server.web_security

    assert security.scheme == "https"
    assert security.ssl_context is not None
    assert dict(security.users) == {"prometheus": HASH.encode()}
    assert "$2b$" not in repr(security)


def test_without_web_config_the_server_is_plain_and_open() -> None:
    security = load_text("").server.web_security

    assert (security.scheme, security.ssl_context, dict(security.users)) == ("http", None, {})
    assert security.middlewares({"/healthz"}) == []


def test_a_changed_web_config_makes_a_different_server_section() -> None:
    """A reload compares the server section to warn that it needs a restart."""
    Path("web.yml").write_text(yaml.safe_dump({"basic_auth_users": {"a": HASH}}))
    first = load_text("server: {web_config: web.yml}").server

    assert load_text("server: {web_config: web.yml}").server == first
    Path("web.yml").write_text(yaml.safe_dump({"basic_auth_users": {"b": HASH}}))
    assert load_text("server: {web_config: web.yml}").server != first
