"""The Flink response parsers, on real Flink 2.3.0 bodies and on anything else."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe._core.causes import RootCause
from probe._core.model import FlinkJobStatus
from probe._flink.client import (
    MAX_EXCEPTION_MESSAGE_CHARS,
    FailureKind,
    FlinkError,
    OverviewEntry,
    parse_job_details,
    parse_newest_exception,
    parse_num_restarts,
    parse_overview,
    parse_root_causes,
)

# Bodies served by a real Flink 2.3.0: standalone, and across ZooKeeper HA failovers.
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
REST = FIXTURES / "flink-2.3.0-rest"
HA = FIXTURES / "flink-2.3.0-ha"

RESTART_JID = "018212e45da3a0cce413edc0a12d63c1"
HA_RESTART_JID = "08175520a61aa5257408cc1837d40dfc"
JID = "a" * 32


def fixture(folder: Path, name: str) -> bytes:
    path = folder / name
    if not path.is_file():
        pytest.fail(f"fixture {path} is missing")
    return path.read_bytes()


def rest(name: str) -> bytes:
    return fixture(REST, name)


def ha(name: str) -> bytes:
    return fixture(HA, name)


def kind_of(parse: Callable[[bytes], object], body: bytes) -> FailureKind:
    with pytest.raises(FlinkError) as caught:
        parse(body)
    return caught.value.kind


def entry(**overrides: Any) -> dict[str, Any]:
    return {"jid": JID, "name": "orders", "state": "RUNNING", "start-time": 1_795_876_276_607} | (
        overrides
    )


def overview_of(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"jobs": list(entries)}).encode()


# -- /jobs/overview ---------------------------------------------------------------------


def test_overview_of_one_running_job() -> None:
    assert parse_overview(rest("26_jobs_overview_one_running.json")) == [
        OverviewEntry(
            jid=RESTART_JID,
            name="flinkreal-restart",
            state=FlinkJobStatus.RUNNING,
            start_time=1795876276607,
            last_modification=1795876277473,
        )
    ]


def test_a_restart_moves_last_modification_but_not_start_time() -> None:
    """What the read plan relies on (probe/_core/reads.py), as a real Flink 2.3.0 showed it."""
    (running,) = parse_overview(rest("26_jobs_overview_one_running.json"))
    (restarting,) = parse_overview(rest("31_jobs_overview_restarting.json"))
    assert restarting.start_time == running.start_time
    assert running.last_modification is not None
    assert restarting.last_modification is not None
    assert restarting.last_modification > running.last_modification


@pytest.mark.parametrize(
    ("name", "states"),
    [
        ("03_jobs_overview_empty.json", []),
        ("94_jobs_overview_after_jm_restart.json", []),
        ("31_jobs_overview_restarting.json", ["RESTARTING"]),
        ("62_jobs_overview_mixed.json", ["FAILED", "FINISHED", "RESTARTING"]),
        ("114_jobs_overview_cancelling.json", ["CANCELLING", "FAILED"]),
        ("77_jobs_overview_all_terminal.json", ["FAILED", "FINISHED", "CANCELED"]),
    ],
)
def test_overview_states(name: str, states: list[str]) -> None:
    assert [job.state for job in parse_overview(rest(name))] == states


def test_overview_during_ha_recovery_shows_initializing_jobs_with_new_start_time() -> None:
    jobs = parse_overview(ha("failover2__8081__all__jobs-overview__s03-INITIALIZING.json"))
    assert {job.state for job in jobs} == {FlinkJobStatus.INITIALIZING}
    restart_job = next(job for job in jobs if job.jid == HA_RESTART_JID)
    assert restart_job.start_time == 1795880704103


def test_overview_start_time_grows_across_ha_failovers() -> None:
    epochs = ["e0-before-failover1", "e1-after-failover1", "e2-after-failover2"]
    start_times = [
        next(
            job.start_time
            for job in parse_overview(ha(f"{epoch}__jobs-overview.json"))
            if job.jid == HA_RESTART_JID
        )
        for epoch in epochs
    ]
    assert start_times == [1795880592635, 1795880648091, 1795880704103]


@pytest.mark.parametrize(
    ("bad_entry", "why"),
    [
        (entry(state=42), "state not a string"),
        (entry(state="UNKNOWN"), "UNKNOWN is ours, not Flink's"),
        (entry(state="running"), "state in the wrong case"),
        (entry(state="BOGUS"), "unknown state"),
        (entry(**{"start-time": "x"}), "start-time not a number"),
        (entry(**{"start-time": "1795876276607"}), "start-time as a string"),
        (entry(**{"start-time": True}), "start-time a boolean"),
        (entry(**{"start-time": 1.5}), "start-time a float"),
        (entry(**{"start-time": -1}), "start-time negative"),
        (entry(**{"start-time": 2**64}), "start-time beyond 64 bits"),
        (entry(jid=JID.upper()), "jid upper case"),
        (entry(jid="a" * 31), "jid too short"),
        (entry(jid="3f1da3c8-6f22-430f-9200-eda014ea5319"), "jid with dashes"),
        (entry(jid=None), "jid null"),
        (entry(name=7), "name not a string"),
        ({"jid": JID, "name": "x", "state": "RUNNING"}, "start-time missing"),
        ({"name": "x", "state": "RUNNING", "start-time": 1}, "jid missing"),
    ],
)
def test_overview_refuses_wrong_entries(bad_entry: dict[str, Any], why: str) -> None:
    assert kind_of(parse_overview, overview_of(entry(), bad_entry)) is FailureKind.BAD_SHAPE, why


@pytest.mark.parametrize(
    "body", [b"[]", b"{}", b'{"jobs": null}', b'{"jobs": {}}', b'{"jobs": [1]}', b"null", b"3"]
)
def test_overview_refuses_other_json_shapes(body: bytes) -> None:
    assert kind_of(parse_overview, body) is FailureKind.BAD_SHAPE


def test_overview_ignores_extra_fields() -> None:
    body = overview_of(entry(jobType="BATCH", tasks={"running": 1}, future={"a": [1, 2]}))
    assert parse_overview(body) == [
        OverviewEntry(JID, "orders", FlinkJobStatus.RUNNING, 1_795_876_276_607)
    ]


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("HTML error page", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
        ("truncated", overview_of(entry())[:-5]),
        ("deeply nested", b"[" * 100_000 + b"]" * 100_000),
        ("invalid UTF-8", b'{"jobs": [], "x": "\xff\xfe"}'),
        ("empty", b""),
        ("trailing garbage", overview_of(entry()) + b"}"),
    ],
)
def test_not_json(name: str, body: bytes) -> None:
    for parse in (
        parse_overview,
        parse_job_details,
        parse_num_restarts,
        parse_newest_exception,
        parse_root_causes,
    ):
        assert kind_of(parse, body) is FailureKind.NOT_JSON, (name, parse.__name__)


# -- /jobs/:jid -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("20_job_restart_running.json", "RUNNING"),
        ("28_job_restart_restarting.json", "RESTARTING"),
        ("42_job_bounded_finished.json", "FINISHED"),
        ("51_job_fail_failed.json", "FAILED"),
        ("101_job_restart2_failed.json", "FAILED"),
        ("113_job_slowcancel_cancelling.json", "CANCELLING"),
        ("72_job_restart_canceled.json", "CANCELED"),
    ],
)
def test_job_details_states(name: str, state: str) -> None:
    assert parse_job_details(rest(name)).state == state


def test_job_details_match_the_overview_entry() -> None:
    details = parse_job_details(rest("20_job_restart_running.json"))
    (overview,) = parse_overview(rest("26_jobs_overview_one_running.json"))
    # Only the overview has last-modification.
    assert details == dataclasses.replace(overview, last_modification=None)


def test_job_details_of_the_initializing_stub_after_failover() -> None:
    # application-id null, schedulerType null, no vertices: still a valid job.
    details = parse_job_details(ha("failover2__8081__restart__job-detail__s03-INITIALIZING.json"))
    assert details == OverviewEntry(
        HA_RESTART_JID, "flinkreal-restart", FlinkJobStatus.INITIALIZING, 1795880704103
    )


@pytest.mark.parametrize(
    "name",
    [
        "80_job_unknown_404.json",
        "81_job_unknown_status_500.json",
        "84_job_invalid_id_400.json",
        "86_unknown_endpoint_404.json",
        "95_job_forever_after_jm_restart_404.json",
    ],
)
def test_error_bodies_are_json_but_not_a_job(name: str) -> None:
    assert kind_of(parse_job_details, rest(name)) is FailureKind.BAD_SHAPE
    assert kind_of(parse_overview, rest(name)) is FailureKind.BAD_SHAPE


def test_job_details_refuse_wrong_types() -> None:
    assert kind_of(parse_job_details, json.dumps(entry(state=42)).encode()) is (
        FailureKind.BAD_SHAPE
    )


# -- /jobs/:jid/metrics?get=numRestarts ---------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "name", "count"),
    [
        (REST, "23_job_restart_metrics_numRestarts_0.json", None),  # fetcher not run yet: []
        (REST, "33_job_restart_metrics_numRestarts_N.json", 6),
        (REST, "103_job_restart2_metrics_multi_failed.json", 2),
        (REST, "82_job_unknown_metrics.json", None),  # an unknown job: 200 []
        (REST, "97_job_forever_metrics_after_jm_restart.json", None),
        (HA, "failover1__8081__restart__metrics-numRestarts__s03-empty.json", None),
        (HA, "failover1__8081__restart__metrics-numRestarts__s04-numRestarts-0.json", 0),
        (HA, "e0-before-failover1__restart-job__metrics-numRestarts.json", 3),
    ],
)
def test_num_restarts(folder: Path, name: str, count: int | None) -> None:
    assert parse_num_restarts(fixture(folder, name)) == count


def metrics(value: Any) -> bytes:
    return json.dumps([{"id": "numRestarts", "value": value}]).encode()


@pytest.mark.parametrize(("value", "count"), [("0", 0), ("17", 17), ("1000000000", 10**9)])
def test_num_restarts_values(value: str, count: int) -> None:
    assert parse_num_restarts(metrics(value)) == count


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "-1",
        "+3",
        " 3",
        "3 ",
        "1e3",
        "3.0",
        "",
        "٣",
        "1_000",
        "1000000001",
        "9" * 400,
        3,
        None,
    ],
)
def test_num_restarts_refuses_what_is_not_a_count(value: Any) -> None:
    assert kind_of(parse_num_restarts, metrics(value)) is FailureKind.BAD_SHAPE


def test_num_restarts_absent_from_other_metrics_is_none() -> None:
    assert parse_num_restarts(b'[{"id":"uptime","value":"2036"}]') is None


@pytest.mark.parametrize(
    "body", [b"{}", b'{"numRestarts": "3"}', b"[3]", b'[{"id": "numRestarts"}]']
)
def test_num_restarts_refuses_other_shapes(body: bytes) -> None:
    assert kind_of(parse_num_restarts, body) is FailureKind.BAD_SHAPE


# -- /jobs/:jid/exceptions --------------------------------------------------------------


def test_newest_exception_of_a_failed_job_names_the_root_cause() -> None:
    assert parse_newest_exception(rest("53_job_fail_exceptions.json")) == (
        "org.apache.flink.runtime.JobException: Recovery is suppressed by "
        "NoRestartBackoffTimeStrategy; caused by: java.lang.RuntimeException: flinkreal: "
        "intentional failure after 3000 ms (record 29)"
    )


def test_newest_exception_of_a_job_out_of_restart_attempts() -> None:
    assert parse_newest_exception(rest("104_job_restart2_exceptions.json")) == (
        "org.apache.flink.runtime.JobException: Recovery is suppressed by "
        "FixedDelayRestartBackoffTimeStrategy(maxNumberRestartAttempts=2, backoffTimeMS=1000); "
        "caused by: java.lang.RuntimeException: flinkreal: intentional failure after 2000 ms "
        "(record 19)"
    )


def test_newest_exception_of_a_restarting_job_is_its_newest_task_failure() -> None:
    assert parse_newest_exception(rest("35_job_restart_exceptions_after_restarts.json")) == (
        "java.lang.RuntimeException: flinkreal: intentional failure after 5000 ms (record 49)"
    )


def test_root_causes_of_a_restarting_job_are_its_task_failures_newest_first() -> None:
    causes = parse_root_causes(rest("35_job_restart_exceptions_after_restarts.json"))

    assert len(causes) >= 2
    assert [cause.timestamp for cause in causes] == sorted(
        (cause.timestamp for cause in causes), reverse=True
    )
    newest = causes[0]
    assert newest.exception == "java.lang.RuntimeException"
    assert newest.message == "flinkreal: intentional failure after 5000 ms (record 49)"
    assert newest.task_name is not None
    assert newest.task_name.startswith("Source: ")


def test_root_causes_skip_entries_that_cannot_be_told_apart() -> None:
    body = history(
        {
            "exceptionName": "java.io.IOException",
            "timestamp": 5,
            "stacktrace": "java.io.IOException: disk",
        },
        {"exceptionName": "java.io.IOException"},
        {"timestamp": 3, "stacktrace": "x"},
        "not an entry",
    )
    assert parse_root_causes(body) == (RootCause("java.io.IOException", "disk", 5, None),)


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        (REST, "25_job_restart_exceptions_none.json"),
        (REST, "46_job_bounded_exceptions_finished.json"),
        (HA, "failover1__8081__restart__job-exceptions__s03-entries-0.json"),
    ],
)
def test_no_exception(folder: Path, name: str) -> None:
    assert parse_newest_exception(fixture(folder, name)) is None


def history(*entries: Any) -> bytes:
    return json.dumps({"exceptionHistory": {"entries": list(entries), "truncated": False}}).encode()


def test_cause_from_the_concurrent_exception_when_the_trace_names_none() -> None:
    body = history(
        {
            "exceptionName": "org.apache.flink.runtime.JobException",
            "stacktrace": "org.apache.flink.runtime.JobException: Recovery is suppressed\n\tat x",
            "concurrentExceptions": [
                {"stacktrace": "java.io.IOException: disk full\n\tat y\nCaused by: a.B: deepest\n"}
            ],
        }
    )
    assert parse_newest_exception(body) == (
        "org.apache.flink.runtime.JobException: Recovery is suppressed; caused by: a.B: deepest"
    )


def test_deepest_cause_wins_and_suppressed_causes_are_ignored() -> None:
    stacktrace = (
        "a.Top: top\n\tat x\n"
        "Caused by: b.Middle: middle\n\tat y\n"
        "\tSuppressed: c.Other: other\n\t\tat z\n\tCaused by: d.SuppressedCause: no\n"
        "Caused by: e.Root: root\n\t... 5 more\n"
    )
    assert parse_newest_exception(history({"stacktrace": stacktrace})) == (
        "a.Top: top; caused by: e.Root: root"
    )


def test_exception_name_when_there_is_no_stacktrace() -> None:
    assert parse_newest_exception(history({"exceptionName": "a.B"})) == "a.B"


def test_newest_is_the_first_entry() -> None:
    assert parse_newest_exception(history({"stacktrace": "new"}, {"stacktrace": "old"})) == "new"


def test_long_messages_are_capped() -> None:
    message = parse_newest_exception(history({"stacktrace": "x" * 5000}))
    assert message is not None
    assert len(message) == MAX_EXCEPTION_MESSAGE_CHARS


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"[]",
        b'{"exceptionHistory": {"entries": "x"}}',
        history(42),
        history({"stacktrace": 42}),
        history({"stacktrace": "  "}),
        history({}),
    ],
)
def test_exceptions_refuse_other_shapes(body: bytes) -> None:
    assert kind_of(parse_newest_exception, body) is FailureKind.BAD_SHAPE


@pytest.mark.parametrize(
    "name",
    [
        "83_job_unknown_exceptions.json",
        "failover1__8081__restart__job-exceptions__s02-http503.json",
    ],
)
def test_exceptions_error_bodies_are_bad_shape(name: str) -> None:
    folder = HA if name.startswith("failover") else REST
    assert kind_of(parse_newest_exception, fixture(folder, name)) is FailureKind.BAD_SHAPE


# -- every HA capture -------------------------------------------------------------------

PARSERS: dict[str, Callable[[bytes], object]] = {
    "jobs-overview": parse_overview,
    "job-detail": parse_job_details,
    "metrics-numRestarts": parse_num_restarts,
    "job-exceptions": parse_newest_exception,
}


def test_every_ha_capture_parses_or_is_a_503() -> None:
    index = json.loads(ha("index.json"))
    parsed = 0
    for name, facts in index.items():
        endpoint = next((e for e in PARSERS if f"__{e}" in name), None)
        if endpoint is None:
            continue  # /jobs/:jid/status: the daemon does not ask it
        body = ha(name)
        if facts["status"] == 200:
            PARSERS[endpoint](body)
            parsed += 1
        else:
            assert facts["status"] == 503
            assert b"ongoing leader election" in body
            assert kind_of(PARSERS[endpoint], body) is FailureKind.BAD_SHAPE
    assert parsed > 50


# -- whatever the bytes -----------------------------------------------------------------

ALL_PARSERS = [parse_overview, parse_job_details, parse_num_restarts, parse_newest_exception]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
field_values = st.one_of(
    json_values,
    st.sampled_from([s.value for s in FlinkJobStatus]),
    st.text("0123456789abcdef", min_size=30, max_size=34),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.text("0123456789", max_size=12),
)
flinkish = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "jobs": st.lists(
                st.dictionaries(
                    st.sampled_from(["jid", "name", "state", "start-time", "end-time"]),
                    field_values,
                ),
                max_size=3,
            )
        },
    ),
    st.dictionaries(st.sampled_from(["jid", "name", "state", "start-time"]), field_values),
    st.lists(st.dictionaries(st.sampled_from(["id", "value"]), field_values), max_size=3),
    st.fixed_dictionaries(
        {
            "exceptionHistory": st.fixed_dictionaries(
                {},
                optional={
                    "entries": st.lists(
                        st.dictionaries(
                            st.sampled_from(
                                ["stacktrace", "exceptionName", "concurrentExceptions"]
                            ),
                            field_values,
                        ),
                        max_size=3,
                    )
                },
            )
        }
    ),
)


def outcome(parse: Callable[[bytes], object], body: bytes) -> object:
    try:
        return parse(body)
    except FlinkError as error:
        return error


def assert_parses_or_flink_error(body: bytes) -> None:
    """A typed result or a one-line FlinkError: any other exception fails the test."""
    results = {parse.__name__: outcome(parse, body) for parse in ALL_PARSERS}
    for result in results.values():
        if isinstance(result, FlinkError):
            assert "\n" not in str(result)
    overview = results["parse_overview"]
    assert isinstance(overview, FlinkError | list)
    assert isinstance(results["parse_job_details"], FlinkError | OverviewEntry)
    assert isinstance(results["parse_num_restarts"], FlinkError | int | None)
    assert isinstance(results["parse_newest_exception"], FlinkError | str | None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes(body: bytes) -> None:
    assert_parses_or_flink_error(body)


@settings(max_examples=200, deadline=None)
@given(st.one_of(json_values, flinkish))
def test_any_json(value: Any) -> None:
    assert_parses_or_flink_error(json.dumps(value).encode())


valid_entries = st.builds(
    OverviewEntry,
    jid=st.text("0123456789abcdef", min_size=32, max_size=32),
    name=st.text(),
    state=st.sampled_from([s for s in FlinkJobStatus if s is not FlinkJobStatus.UNKNOWN]),
    start_time=st.integers(min_value=0, max_value=2**63 - 1),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(valid_entries, max_size=5))
def test_every_valid_overview_is_read_back(entries: list[OverviewEntry]) -> None:
    body = overview_of(
        *(
            entry(jid=e.jid, name=e.name, state=e.state.value, **{"start-time": e.start_time})
            for e in entries
        )
    )
    assert parse_overview(body) == entries
