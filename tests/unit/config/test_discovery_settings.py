"""The settings of dynamic targets: defaults, and one line per mistake at its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from probe._config import Config
from probe._config.discovery import EnrollmentConfig, TargetsHttpConfig
from probe._config.errors import error_lines


def lines(data: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ValidationError) as raised:
        Config.model_validate(data, context={"environ": environ or {}})
    return error_lines(raised.value)


def test_defaults_leave_enrollment_off() -> None:
    wired = Config()

    assert wired.targets_files == []
    assert wired.targets_http is None
    assert wired.targets_refresh == 30.0
    assert not wired.enrollment.enabled
    assert wired.enrollment.model_dump(mode="json") == {
        "allow": [],
        "ttl": "10m",
        "first_wait": "2s",
        "max_targets": 1000,
        "profiles": {},
    }


def test_settings_read_as_in_a_file() -> None:
    wired = Config.model_validate(
        {
            "targets_files": ["/etc/flink-probe/targets/*.yml"],
            "targets_http": {"url": "https://sd.example/targets?team=a", "refresh": "1m"},
            "targets_refresh": "5s",
            "enrollment": {
                "allow": [r"http://[a-z0-9-]+-rest\.[a-z0-9-]+\.svc:8081/"],
                "ttl": "1h",
                "first_wait": 0,
                "max_targets": 50,
            },
        }
    )

    assert wired.targets_http == TargetsHttpConfig(
        url="https://sd.example/targets?team=a", refresh=60.0
    )
    assert wired.enrollment.enabled
    assert wired.enrollment.allows("http://orders-rest.shop.svc:8081/", "orders-rest.shop.svc:8081")
    assert not wired.enrollment.allows("http://orders-rest.shop.svc:8081/x/", "")
    assert wired.model_dump(mode="json")["enrollment"]["allow"] == [
        r"http://[a-z0-9-]+-rest\.[a-z0-9-]+\.svc:8081/"
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"targets_files": ["targets/*.txt"]},
            "targets_files[0]: must end with .json, .yml or .yaml (as in Prometheus),"
            " got 'targets/*.txt'",
        ),
        (
            {"targets_http": {"url": "ftp://sd/"}},
            "targets_http.url: must be an http(s) URL with a host, got 'ftp://sd/'",
        ),
        ({"targets_http": {}}, "targets_http.url: required key is missing"),
        ({"targets_http": {"url": "http://sd/", "refresh": 0}}, "targets_http.refresh: must be"),
        (
            {"enrollment": {"allow": ["http://(a"]}},
            "enrollment.allow[0]: invalid regular expression: missing ),",
        ),
        ({"enrollment": {"max_targets": 0}}, "enrollment.max_targets: must be at least 1, got 0"),
        ({"enrollment": {"ttl": "0s"}}, "enrollment.ttl: must be at least 1ms"),
        ({"enrollment": {"allowed": []}}, "enrollment.allowed: unknown key"),
        (
            {"enrollment": {"profiles": {"a b": {}}}},
            "enrollment.profiles.a b: must match [A-Za-z0-9_.-]+, got 'a b'",
        ),
        (
            {"enrollment": {"profiles": {"p": {"bearer_token": "t0ken"}}}},
            "enrollment.profiles.p.bearer_token: secrets are never written in the"
            " configuration: use bearer_token_file or bearer_token_env",
        ),
        (
            {"enrollment": {"profiles": {"p": {"bearer_token_env": "NOPE"}}}},
            "enrollment.profiles.p.bearer_token_env:",
        ),
        (
            {
                "enrollment": {
                    "profiles": {
                        "p": {
                            "bearer_token_env": "T",
                            "basic_auth": {"username": "u", "password_env": "T"},
                        }
                    }
                }
            },
            "enrollment.profiles.p: set one kind of credentials,"
            " not basic_auth and bearer_token_file/_env",
        ),
    ],
)
def test_a_mistake_is_one_line_at_its_key(data: dict[str, Any], expected: str) -> None:
    [line] = lines(data, {"T": "t0ken"})

    assert line.startswith(expected)
    assert "t0ken" not in line


def test_a_password_in_the_http_sd_url_is_not_quoted() -> None:
    [line] = lines({"targets_http": {"url": "ftp://u:hunter2@sd/"}})

    assert "hunter2" not in line


def test_a_profile_reads_its_secrets_while_the_configuration_loads(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("hunter2\n")

    enrollment = EnrollmentConfig.model_validate(
        {
            "profiles": {
                "basic": {
                    "basic_auth": {"username": "flink", "password_file": str(tmp_path / "password")}
                }
            }
        }
    )

    credentials = enrollment.profiles["basic"].template.credentials()
    assert credentials is not None
    assert credentials.header_value() == "Basic Zmxpbms6aHVudGVyMg=="
    assert "hunter2" not in repr(enrollment)
