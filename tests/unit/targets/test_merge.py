"""One name space for every source: configuration wins a conflict, which is reported once, and
each dynamic target is probed with the settings of a configured target with discovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe._cogs.credentials import BearerToken
from probe._config.discovery import EnrollmentConfig, ProfileConfig
from probe._config.models import TargetConfig
from probe._targets.discovered import DiscoveredTarget, Source
from probe._targets.merge import Rejection, merge_targets

CONFIGURED = TargetConfig(name="orders", url="http://jm-orders:8081/", namespace="shop")


def discovered(name: str, url: str, source: Source = "file", **fields: str) -> DiscoveredTarget:
    return DiscoveredTarget(name, url, source=source, **fields)


def test_every_source_shares_one_name_space_and_configuration_wins() -> None:
    file_same_name = discovered("orders", "http://elsewhere:8081/")
    file_same_url = discovered("jm-orders:8081", "http://jm-orders:8081/")
    enrolled = discovered("billing", "http://jm-billing:8081/", "enrolled")

    merged = merge_targets([CONFIGURED], [file_same_name, file_same_url, enrolled], {}, 10.0)

    assert {name: t.source for name, t in merged.targets.items()} == {
        "orders": "config",
        "billing": "enrolled",
    }
    assert merged.targets["orders"].config is CONFIGURED
    assert merged.rejected == {
        Rejection(
            file_same_name, "its name is the config target 'orders''s (http://jm-orders:8081/)"
        ),
        Rejection(
            file_same_url, "its URL is the config target 'orders''s (http://jm-orders:8081/)"
        ),
    }


def test_files_win_over_http_and_http_over_enrollment_whatever_the_order_given() -> None:
    enrolled = discovered("x", "http://a:1/", "enrolled")
    over_http = discovered("x", "http://b:1/", "http")
    from_file = discovered("x", "http://c:1/", "file")

    merged = merge_targets([], [enrolled, over_http, from_file], {}, 10.0)

    assert merged.by_name("x") == from_file
    assert {r.source for r in merged.rejected} == {"http", "enrolled"}


def test_within_a_source_the_first_declaration_wins() -> None:
    first = discovered("x", "http://a:1/")
    second = discovered("x", "http://b:1/")

    merged = merge_targets([], [first, second, first], {}, 10.0)

    assert merged.by_name("x") == first
    assert len(merged.rejected) == 2


def test_a_conflict_is_new_once() -> None:
    clash = discovered("orders", "http://elsewhere:8081/")
    before = merge_targets([CONFIGURED], [], {}, 10.0)
    first = merge_targets([CONFIGURED], [clash], {}, 10.0)
    again = merge_targets([CONFIGURED], [clash], {}, 10.0)

    [new] = first.new_rejections(before)
    assert new.message == (
        "file target 'orders' (http://elsewhere:8081/) left out:"
        " its name is the config target 'orders''s (http://jm-orders:8081/)"
    )
    assert again.new_rejections(first) == []
    assert first.new_rejections(None) == [new]


def test_counts_name_every_source() -> None:
    merged = merge_targets(
        [CONFIGURED],
        [discovered("a", "http://a:1/"), discovered("b", "http://b:1/", "enrolled")],
        {},
        10.0,
    )

    assert merged.counts() == {"config": 1, "file": 1, "http": 0, "enrolled": 1}


def test_lookups_by_url_and_name() -> None:
    target = discovered("a", "http://a:1/", "http")
    merged = merge_targets([CONFIGURED], [target], {}, 10.0)

    assert merged.by_url("http://a:1/") == target
    assert merged.by_url("http://jm-orders:8081/") == DiscoveredTarget(
        "orders", "http://jm-orders:8081/", "shop", source="config"
    )
    assert merged.by_url("http://nowhere:1/") is None
    assert merged.by_name("nowhere") is None


def test_a_dynamic_target_is_probed_like_a_configured_target_with_discovery() -> None:
    target = discovered("a:1", "http://a:1/", namespace="shop", deployment="orders")

    [effective] = merge_targets([], [target], {}, interval=30.0).targets.values()

    assert effective.declared == target
    config = effective.config
    assert (config.name, config.url, config.namespace, config.discover) == (
        "a:1",
        "http://a:1/",
        "shop",
        True,
    )
    assert config.metrics_max_age == 40.0  # probe.interval + 10 s, as for a configured target
    assert config.credentials() is None
    assert config.ssl_context is None


def test_a_profile_gives_its_credentials_and_tls(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t0ken\n")
    profiles = EnrollmentConfig.model_validate(
        {
            "profiles": {
                "secure": {
                    "bearer_token_file": str(tmp_path / "token"),
                    "tls": {"insecure_skip_verify": True, "server_name": "flink"},
                }
            }
        }
    ).profiles
    target = discovered("a", "https://a:8443/", profile="secure")

    [effective] = merge_targets([], [target], profiles, 10.0).targets.values()

    assert effective.config.credentials() == BearerToken("t0ken")
    assert effective.config.ssl_context is profiles["secure"].template.ssl_context
    assert effective.config.server_name == "flink"


def test_a_profile_gives_its_lag_bounds() -> None:
    """A cluster whose metric fetcher runs less often needs a larger bound, or the restart
    rule would credit a stale count to a newer JobManager."""
    profiles = EnrollmentConfig.model_validate(
        {
            "profiles": {
                "slow": {"metrics_max_age": "40s", "overview_max_age": "5s"},
                "untrusted": {"max_clock_skew": "off"},
            }
        }
    ).profiles
    slow = discovered("a", "http://a:1/", profile="slow")
    untrusted = discovered("b", "http://b:1/", profile="untrusted")

    merged = merge_targets([], [slow, untrusted], profiles, interval=5.0).targets

    assert (merged["a"].config.metrics_max_age, merged["a"].config.overview_max_age) == (40, 5)
    assert merged["a"].config.max_clock_skew == 1.0
    assert merged["b"].config.metrics_max_age == 15.0  # probe.interval + 10 s
    assert merged["b"].config.max_clock_skew is None


@pytest.mark.parametrize(
    ("profile", "url", "reason"),
    [
        ("missing", "http://a:1/", "unknown profile 'missing' (configured: tls)"),
        ("tls", "http://a:1/", "profile 'tls' sets tls, which needs an https URL"),
    ],
)
def test_a_target_whose_profile_cannot_apply_is_left_out(
    profile: str, url: str, reason: str
) -> None:
    profiles = {"tls": ProfileConfig.model_validate({"tls": {"insecure_skip_verify": True}})}

    merged = merge_targets([], [discovered("a", url, profile=profile)], profiles, 10.0)

    assert merged.targets == {}
    [rejection] = merged.rejected
    assert rejection.reason.startswith(reason)


def test_a_rebuilt_target_equals_the_one_before() -> None:
    """The scheduler restarts a target's loop only when its settings differ."""
    target = discovered("a", "http://a:1/")

    first = merge_targets([], [target], {}, 10.0).targets["a"].config
    second = merge_targets([], [target], {}, 10.0).targets["a"].config

    assert first == second
    assert merge_targets([], [target], {}, 20.0).targets["a"].config != first
