"""`flink-probe` as an operator runs it: a subprocess, its exit code, stderr and state file."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import (
    DaemonProcess,
    daemon_config,
    dashed,
    free_port,
    restarts_of,
    run_cli,
    target,
    wait_for_sync,
    write_config,
)
from hypothesis import given
from hypothesis import strategies as st
from simulation import budget

from probe._version import __version__
from probe.cli import main
from probe.testing import FakeCluster, FaultKind, serve_in_thread

MESSAGE_PREFIX = "flink-probe: "


def user_messages(stderr: str) -> list[str]:
    """The lines meant for the user; every other stderr line must be a JSON log line (so no
    traceback got through)."""
    messages = []
    for line in stderr.splitlines():
        if line.startswith(MESSAGE_PREFIX):
            messages.append(line)
            continue
        try:
            json.loads(line)
        except ValueError:
            pytest.fail(f"stderr line is neither a message nor a JSON log line: {line!r}")
    return messages


def stored_jobs(path: Path) -> dict[str, dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT job_id, document FROM jobs").fetchall()
    return {job_id: json.loads(document)["job"] for job_id, document in rows}


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"flink-probe {__version__}"


@dataclass(frozen=True, slots=True)
class Outcome:
    code: int | str | None
    out: str
    err: str


def in_process(*args: str) -> Outcome:
    """`flink-probe ARGS` through `main`, as the console script calls it, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | str | None = main(list(args))
        except SystemExit as stop:
            code = stop.code
    return Outcome(code, out.getvalue(), err.getvalue())


NOT_A_URL = "argument --url: not an http:// or https:// URL with a host"


@pytest.mark.parametrize(
    ("args", "problem", "command"),
    [
        ((), "the following arguments are required: COMMAND", ""),
        (("start",), "argument COMMAND: invalid choice: 'start'", ""),
        (("run", "--verbose"), "unrecognized arguments: --verbose", ""),
        (("check-config", "--config"), "argument --config: expected one argument", "check-config"),
        (("demo", "--port", "x"), "argument --port: invalid int value: 'x'", "demo"),
        (("jobs", "--state", "running"), "argument --state: invalid choice: 'RUNNING'", "jobs"),
        (("jobs", "--url", "localhost"), NOT_A_URL, "jobs"),
        (("jobs", "--url", ""), NOT_A_URL, "jobs"),
        (("jobs", "--url", "http://[::1"), NOT_A_URL, "jobs"),
        (("jobs", "--url", "http://127.0.0.1:99999"), NOT_A_URL, "jobs"),
        (
            ("jobs", "--url", "http://127.0.0.1:9270/a b"),
            "argument --url: the URL contains a",
            "jobs",
        ),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(
    args: tuple[str, ...], problem: str, command: str
) -> None:
    outcome = in_process(*args)
    assert (outcome.code, outcome.out) == (2, "")
    [line] = outcome.err.splitlines()
    assert line.startswith(f"flink-probe: error: {problem}")
    assert line.endswith(f"(see {' '.join(['flink-probe', command]).strip()} --help)")


def test_a_usage_error_of_the_installed_command_is_one_line() -> None:
    result = run_cli("jobs", "--url", "localhost")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"flink-probe: error: {NOT_A_URL}, such as http://127.0.0.1:9270"
        " (see flink-probe jobs --help)\n"
    )


PASSWORD = "pw-Zq9"
CLOSED_PORT = free_port()
"""Nothing listens there: a URL that parses is refused by the kernel, never sent elsewhere."""
_url_characters = st.characters(blacklist_characters="/?#@")  # none may move the host
daemon_urls = st.one_of(
    # Without "//" there is no host: never a request.
    st.text().filter(lambda text: "//" not in text),
    st.builds(
        "{}{}{}{}{}".format,
        st.sampled_from(["http://", "HTTPS://", "https://", "ftp://", "http:/", "//", ""]),
        st.sampled_from(["", f"ops:{PASSWORD}@", "ops@", ":@"]),
        st.sampled_from(["127.0.0.1", "[::1]", "[::1", "[", "]", "", "127.0.0.1]", "[127.0.0.1]"]),
        st.one_of(
            st.sampled_from(["", ":", f":{CLOSED_PORT}", ":0", ":65536", ":-1"]),
            st.text(st.characters(blacklist_categories=["Nd"], blacklist_characters="/?#@")).map(
                ":".__add__
            ),
        ),
        st.one_of(st.just(""), st.text().map("/".__add__), st.text(_url_characters)),
    ),
)


@budget(ci=300, deep=5_000)
@given(daemon_urls)
def test_any_url_gives_one_line_and_never_a_traceback(url: str) -> None:
    outcome = in_process("jobs", "--url", url)
    assert outcome.code in (1, 2), outcome
    assert outcome.out == ""
    [line] = outcome.err.splitlines()
    assert line.startswith("flink-probe: ")
    assert PASSWORD not in line


JOB_ID = "3f1da3c8-6f22-430f-9200-eda014ea5319"


def bad_section_values(config: dict[str, Any]) -> None:
    config["probe"]["interval"] = "ten seconds"
    config["probe"]["intervall"] = "10s"


def job_on_unknown_target(config: dict[str, Any]) -> None:
    config["jobs"] = [{"id": JOB_ID, "target": "nope", "deployment": "orders"}]


@pytest.mark.parametrize(
    ("command", "mistake", "expected"),
    [
        (
            "run",
            bad_section_values,
            [
                "flink-probe: config: probe.interval: invalid duration 'ten seconds'",
                "flink-probe: config: probe.intervall: unknown key",
            ],
        ),
        (
            "check-config",
            job_on_unknown_target,
            ["flink-probe: config: jobs[0].target: unknown target 'nope' (declared: prod)"],
        ),
    ],
    ids=["bad-duration-and-unknown-key", "unknown-target"],
)
def test_config_errors_exit_2_with_one_line_each(
    tmp_path: Path,
    command: str,
    mistake: Callable[[dict[str, Any]], None],
    expected: list[str],
) -> None:
    config = daemon_config(tmp_path / "state.db", [target("prod", "http://127.0.0.1:8081")])
    mistake(config)
    path = write_config(tmp_path / "bad.yaml", config)

    result = run_cli(command, "--config", str(path))

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected), result.stderr
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), result.stderr
    assert not (tmp_path / "state.db").exists()


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = run_cli("run", "--config", str(missing))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"flink-probe: config: config file {missing}: not found"]


def test_check_config_prints_the_effective_config_with_secrets_redacted(tmp_path: Path) -> None:
    secret = "Bearer s3cr3t-t0ken"
    config = daemon_config(
        tmp_path / "state.db",
        [target("prod", "http://127.0.0.1:8081", headers={"Authorization": secret})],
    )
    del config["probe"]["not_found_grace"]  # left out: the effective config shows the default
    path = write_config(tmp_path / "config.yaml", config)

    result = run_cli("check-config", "--config", str(path))

    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout
    effective = yaml.safe_load(result.stdout)
    assert effective["targets"][0]["headers"] == {"Authorization": "<redacted>"}
    assert effective["probe"]["interval"] == "200ms"
    assert effective["probe"]["not_found_grace"] == 3
    assert effective["state"]["path"] == str(tmp_path / "state.db")
    # It is a configuration file itself, and says the same when checked again.
    again = run_cli("check-config", "--config", str(write_config(tmp_path / "eff.yaml", effective)))
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout


def test_sigterm_stops_the_daemon_with_its_last_round_stored(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    cluster = FakeCluster()
    jid = cluster.submit("orders")
    cluster.restart(jid, n=3)
    job_id = dashed(jid)
    fake_port = free_port()
    prod = target("prod", f"http://127.0.0.1:{fake_port}")

    with contextlib.ExitStack() as processes:
        with serve_in_thread(cluster, port=fake_port):
            first = processes.enter_context(
                DaemonProcess(daemon_config(state, [prod]), tmp_path / "first.yaml")
            )
            first.wait_healthy()
            last_seen = wait_for_sync(
                lambda: first.client.job(job_id), lambda j: restarts_of(j) == 3, "3 restarts"
            )
            assert first.terminate() == 0, first.stderr
            assert user_messages(first.stderr) == []  # no traceback either

            stored = stored_jobs(state)[job_id]
            assert (stored["status"]["state"], restarts_of(stored)) == ("STARTED", 3)
            assert last_seen is not None
            seen_version = last_seen["metadata"]["resourceVersion"]
            assert stored["metadata"]["resourceVersion"] >= seen_version

            # Restarted on the same state, with a first round that cannot finish: it serves
            # the stored Job as it was.
            cluster.set_fault("*", FaultKind.HANG)
            slow = daemon_config(state, [prod], interval="30s", timeout="30s")
            again = processes.enter_context(DaemonProcess(slow, tmp_path / "second.yaml"))
            again.wait_healthy()
            assert again.client.jobs() == [stored]
        # The fake is closed, which ends the hanging request: the daemon stops without waiting.
        assert again.terminate() == 0, again.stderr


def test_a_second_daemon_on_the_same_state_or_port_exits_1(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with DaemonProcess(daemon_config(state, []), tmp_path / "first.yaml") as first:
        first.wait_healthy()
        port = int(first.config["server"]["listen"].rsplit(":", 1)[1])

        same_state = daemon_config(state, [])
        result = run_cli("run", "--config", str(write_config(tmp_path / "b.yaml", same_state)))
        assert result.returncode == 1, result.stderr
        [message] = user_messages(result.stderr)
        assert "is in use by another flink-probe process" in message
        assert str(state) in message

        same_port = daemon_config(tmp_path / "other.db", [], port=port)
        result = run_cli("run", "--config", str(write_config(tmp_path / "c.yaml", same_port)))
        assert result.returncode == 1, result.stderr
        [message] = user_messages(result.stderr)
        assert message.startswith(f"flink-probe: cannot listen on 127.0.0.1:{port}: ")
        assert "address already in use" in message.lower()

        assert first.client.healthz() == 200
        assert first.terminate() == 0, first.stderr
