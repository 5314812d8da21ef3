"""The enrollment registry's decisions for ``/probe?target=``: who is enrolled, under which
name, and who is refused with which status. Time is passed in; nothing is contacted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from probe._config.discovery import EnrollmentConfig
from probe._config.models import TargetConfig
from probe._targets.discovered import DiscoveredTarget, url_name
from probe._targets.enrollment import Decision, EnrollmentRegistry
from probe._targets.merge import merge_targets

ALLOW = [r"https?://jm-[a-z0-9-]+(\.flink)?:\d+/?", r"https://ingress:443/[a-z]+/"]
T0 = 1_000.0


def registry(**settings: Any) -> EnrollmentRegistry:
    return EnrollmentRegistry(EnrollmentConfig.model_validate({"allow": ALLOW, **settings}))


def refused(decision: Decision) -> tuple[str | None, int]:
    assert decision.outcome == "refused", decision
    return decision.reason, decision.status


def test_the_first_scrape_of_an_allowed_url_enrolls_it() -> None:
    enrollments = registry(first_wait="1500ms")

    decision = enrollments.enroll(
        {"target": "http://jm-a:8081", "namespace": "shop", "deployment": "orders"}, T0
    )

    assert decision == Decision(
        "enrolled",
        200,
        target=DiscoveredTarget(
            "jm-a:8081", "http://jm-a:8081/", "shop", "orders", source="enrolled"
        ),
        wait=1.5,
        changed=True,
    )
    assert enrollments.targets() == (decision.target,)


def test_the_next_scrapes_find_it_known_and_change_nothing() -> None:
    enrollments = registry()
    first = enrollments.enroll({"target": "http://jm-a:8081/", "namespace": "shop"}, T0)

    again = enrollments.enroll({"target": "http://jm-a:8081", "namespace": "shop"}, T0 + 15)

    assert again == Decision("known", 200, target=first.target)


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example:8081/",
        "http://jm-a:8081/../../admin",
        "http://jm-a:8081.evil.example/",
        "http://169.254.169.254/latest/meta-data/",
        "xhttp://jm-a:8081/",
    ],
)
def test_a_url_outside_allow_is_forbidden_and_not_enrolled(url: str) -> None:
    enrollments = registry()

    decision = enrollments.enroll({"target": url}, T0)

    assert decision.outcome == "refused"
    assert decision.status in (400, 403)
    assert enrollments.targets() == ()


def test_forbidden_is_403_and_says_which_url() -> None:
    decision = registry().enroll({"target": "http://evil.example:8081"}, T0)

    assert refused(decision) == ("forbidden", 403)
    assert decision.message == "target http://evil.example:8081/ does not match enrollment.allow"


def test_without_allow_enrollment_is_off() -> None:
    enrollments = EnrollmentRegistry(EnrollmentConfig())

    decision = enrollments.enroll({"target": "http://jm-a:8081/"}, T0)

    assert refused(decision) == ("forbidden", 403)
    assert decision.message == "enrollment is off: enrollment.allow is empty"


def test_allow_matches_the_url_as_given_or_as_normalised() -> None:
    enrollments = EnrollmentRegistry(
        EnrollmentConfig.model_validate({"allow": [r"http://jm-a:8081", r"http://jm-b:8081/"]})
    )

    assert enrollments.enroll({"target": "http://jm-a:8081"}, T0).outcome == "enrolled"
    assert enrollments.enroll({"target": "jm-b:8081"}, T0).outcome == "enrolled"
    # Anchored at both ends: a prefix of an allowed URL is not allowed, nor a longer one.
    assert enrollments.enroll({"target": "http://jm-a:808"}, T0).status == 403
    assert enrollments.enroll({"target": "http://jm-a:8081/x"}, T0).status == 403


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "target= is required: the Flink REST URL to probe"),
        ({"target": " "}, "target= is required: the Flink REST URL to probe"),
        ({"target": "ftp://jm-a:21/"}, "target: must be an http(s) URL with a host"),
        ({"target": "http://jm-a:8081/?x=1"}, "target: must not have a query or fragment"),
        ({"target": "http://jm-a:8081/", "namespace": "a/b"}, "namespace: must match"),
        ({"target": "http://jm-a:8081/", "name": "a b"}, "name: must match"),
        ({"target": "http://jm-a:8081/", "profile": "nope"}, "profile: unknown profile 'nope'"),
        ({"target": "http://jm-a:8081/", "profile": "ca"}, "profile: profile 'ca' sets tls"),
    ],
)
def test_a_bad_request_is_400_with_one_line(query: Mapping[str, str], message: str) -> None:
    enrollments = registry(profiles={"ca": {"tls": {"insecure_skip_verify": True}}})

    decision = enrollments.enroll(query, T0)

    assert refused(decision) == ("bad_request", 400)
    assert decision.message.startswith(message)
    assert enrollments.targets() == ()


def test_credentials_never_travel_in_the_query_string() -> None:
    decision = registry().enroll({"target": "http://u:hunter2@jm-a:8081/"}, T0)

    assert refused(decision) == ("bad_request", 400)
    assert "hunter2" not in decision.message
    assert "use a profile" in decision.message


def test_a_profile_names_the_credentials_to_use() -> None:
    enrollments = registry(profiles={"ca": {"tls": {"insecure_skip_verify": True}}})

    decision = enrollments.enroll({"target": "https://jm-a:8443", "profile": "ca"}, T0)

    assert decision.target is not None
    assert decision.target.profile == "ca"


def test_empty_parameters_count_as_absent() -> None:
    decision = registry().enroll(
        {"target": "http://jm-a:1", "namespace": "", "deployment": "", "name": "", "profile": ""},
        T0,
    )

    assert decision.target == DiscoveredTarget("jm-a:1", "http://jm-a:1/", source="enrolled")


# -- names ----------------------------------------------------------------------------------


def test_a_name_comes_from_name_else_from_host_port_and_path() -> None:
    enrollments = registry()

    named = enrollments.enroll({"target": "http://jm-a:8081", "name": "orders"}, T0)
    derived = enrollments.enroll({"target": "https://ingress:443/flink/"}, T0)

    assert named.target is not None
    assert named.target.name == "orders"
    assert derived.target is not None
    assert derived.target.name == "ingress:443/flink"


def test_a_name_held_by_another_url_is_a_409() -> None:
    enrollments = registry()
    enrollments.enroll({"target": "http://jm-a:8081", "name": "orders"}, T0)

    decision = enrollments.enroll({"target": "http://jm-b:8081", "name": "orders"}, T0)

    assert refused(decision) == ("conflict", 409)
    assert decision.message == (
        "name 'orders' is taken by target http://jm-a:8081/: choose another with name="
    )


def test_two_urls_with_one_derived_name_do_not_share_it() -> None:
    enrollments = registry()
    enrollments.enroll({"target": "http://jm-a:8443"}, T0)

    assert refused(enrollments.enroll({"target": "https://jm-a:8443"}, T0)) == ("conflict", 409)
    other = enrollments.enroll({"target": "https://jm-a:8443", "name": "a-tls"}, T0)
    assert other.outcome == "enrolled"


def test_an_enrolled_url_keeps_its_name() -> None:
    enrollments = registry()
    enrollments.enroll({"target": "http://jm-a:8081", "name": "orders"}, T0)

    renamed = enrollments.enroll({"target": "http://jm-a:8081", "name": "sales"}, T0)
    unnamed = enrollments.enroll({"target": "http://jm-a:8081", "name": " "}, T0)

    assert refused(renamed) == ("conflict", 409)
    assert renamed.message == "target http://jm-a:8081/ is enrolled as 'orders': a name stays"
    assert unnamed.outcome == "known"
    assert unnamed.target is not None
    assert unnamed.target.name == "orders"


def test_a_new_namespace_or_deployment_enrolls_the_target_anew_under_its_name() -> None:
    enrollments = registry(first_wait="2s")
    enrollments.enroll({"target": "http://jm-a:8081", "namespace": "shop"}, T0)

    moved = enrollments.enroll({"target": "http://jm-a:8081", "namespace": "sales"}, T0 + 1)

    assert moved.outcome == "enrolled"
    assert moved.changed
    assert moved.wait == 2.0
    assert moved.target == DiscoveredTarget(
        "jm-a:8081", "http://jm-a:8081/", "sales", source="enrolled"
    )


# -- other sources --------------------------------------------------------------------------


def others(*targets: TargetConfig, discovered: tuple[DiscoveredTarget, ...] = ()) -> Any:
    return merge_targets(list(targets), discovered, {}, 10.0)


def test_a_url_another_source_declares_is_answered_as_that_target_even_outside_allow() -> None:
    configured = TargetConfig(name="local", url="http://127.0.0.1:8081/", namespace="ops")
    enrollments = registry()

    decision = enrollments.enroll({"target": "http://127.0.0.1:8081"}, T0, others(configured))

    assert decision.outcome == "known"
    assert decision.target == DiscoveredTarget(
        "local", "http://127.0.0.1:8081/", "ops", source="config"
    )
    assert enrollments.targets() == ()


def test_a_name_another_source_holds_is_a_409() -> None:
    configured = TargetConfig(name="orders", url="http://jm-z:8081/")

    decision = registry().enroll(
        {"target": "http://jm-a:8081", "name": "orders"}, T0, others(configured)
    )

    assert refused(decision) == ("conflict", 409)


def test_an_enrolled_target_gives_way_to_a_source_that_takes_its_url_or_name() -> None:
    enrollments = registry()
    enrollments.enroll({"target": "http://jm-a:8081"}, T0)
    enrollments.enroll({"target": "http://jm-b:8081", "name": "orders"}, T0)
    from_file = DiscoveredTarget("jm-a:8081", "http://jm-a:8081/", "files", source="file")
    configured = TargetConfig(name="orders", url="http://jm-z:8081/")
    index = others(configured, discovered=(from_file,))

    by_url = enrollments.enroll({"target": "http://jm-a:8081"}, T0 + 1, index)
    by_name = enrollments.enroll({"target": "http://jm-b:8081"}, T0 + 1, index)

    assert (by_url.outcome, by_url.target, by_url.changed) == ("known", from_file, True)
    assert refused(by_name) == ("conflict", 409)
    assert by_name.changed
    assert enrollments.targets() == ()


# -- limits ---------------------------------------------------------------------------------


def test_past_max_targets_a_new_url_is_a_429_and_known_ones_still_answer() -> None:
    enrollments = registry(max_targets=2)
    enrollments.enroll({"target": "http://jm-a:1"}, T0)
    enrollments.enroll({"target": "http://jm-b:1"}, T0)

    full = enrollments.enroll({"target": "http://jm-c:1"}, T0)

    assert refused(full) == ("full", 429)
    assert full.message == "enrollment.max_targets (2) targets are enrolled"
    assert enrollments.enroll({"target": "http://jm-a:1"}, T0).outcome == "known"
    assert len(enrollments) == 2


def test_a_target_not_scraped_for_ttl_is_retired_and_makes_room() -> None:
    enrollments = registry(ttl="10m", max_targets=2)
    a = enrollments.enroll({"target": "http://jm-a:1"}, T0).target
    enrollments.enroll({"target": "http://jm-b:1"}, T0 + 60)
    enrollments.enroll({"target": "http://jm-a:1"}, T0 + 120)  # scraped again: younger

    assert enrollments.next_expiry() == T0 + 60 + 600
    assert enrollments.expire(T0 + 659.9) == ()
    [b] = enrollments.expire(T0 + 660)
    assert b.url == "http://jm-b:1/"
    assert enrollments.next_expiry() == T0 + 720
    assert enrollments.enroll({"target": "http://jm-c:1"}, T0 + 700).outcome == "enrolled"
    assert enrollments.expire(T0 + 720) == (a,)


def test_a_retired_url_comes_back_under_the_same_name() -> None:
    enrollments = registry(ttl="1m")
    first = enrollments.enroll({"target": "http://jm-a:8081"}, T0)
    enrollments.expire(T0 + 60)

    back = enrollments.enroll({"target": "http://jm-a:8081"}, T0 + 3600)

    assert back.outcome == "enrolled"
    assert back.target == first.target


def test_a_reload_retires_what_the_new_settings_no_longer_admit() -> None:
    enrollments = registry(profiles={"ca": {"tls": {"insecure_skip_verify": True}}})
    kept = enrollments.enroll({"target": "http://jm-a:1"}, T0).target
    enrollments.enroll({"target": "https://ingress:443/flink/"}, T0)
    enrollments.enroll({"target": "https://jm-b:1", "profile": "ca"}, T0)

    retired = enrollments.reconfigure(
        EnrollmentConfig.model_validate({"allow": [r"https?://jm-[a-z]+:\d+/"]})
    )

    assert sorted(t.url for t in retired) == ["https://ingress:443/flink/", "https://jm-b:1/"]
    assert enrollments.targets() == (kept,)


# -- any sequence of scrapes ----------------------------------------------------------------

URLS = [
    "http://jm-a:1/",
    "https://jm-a:1/",
    "http://JM-A:1/",
    "http://jm-b:2/",
    "http://jm-c:3/",
    "https://ingress:443/a/",
    "https://ingress:443/b/",
    "http://outside:1/",
]
NAMES = [None, "orders", "billing"]


class Scrapes(RuleBasedStateMachine):
    """Random scrapes and expiries: names stay unique and stable, the cap holds."""

    def __init__(self) -> None:
        super().__init__()
        self.registry = registry(
            ttl="1m", max_targets=4, allow=[*ALLOW, r"http://JM-A:1/", r"https://ingress.*"]
        )
        self.now = T0
        self.names: dict[str, str] = {}
        """The name each held URL got when it was enrolled."""

    @rule(url=st.sampled_from(URLS), name=st.sampled_from(NAMES))
    def scrape(self, url: str, name: str | None) -> None:
        query = {"target": url} | ({"name": name} if name else {})
        decision = self.registry.enroll(query, self.now)
        held = self.names.get(url)
        if url == "http://outside:1/":
            assert decision.status == 403
            return
        if decision.outcome == "refused":
            assert decision.target is None
            assert decision.status == 409 or (decision.status == 429 and held is None)
            return
        assert decision.target is not None
        if held is not None:
            assert decision.target.name == held, "an enrolled URL keeps its name"
        else:
            expected = name or url_name(url)
            assert decision.target.name == expected
            self.names[url] = expected

    @precondition(lambda self: len(self.names) > 0)
    @rule(seconds=st.floats(min_value=0, max_value=90))
    def wait(self, seconds: float) -> None:
        self.now += seconds
        for target in self.registry.expire(self.now):
            del self.names[target.url]

    @invariant()
    def names_are_unique_and_the_cap_holds(self) -> None:
        targets = self.registry.targets()
        assert len({t.name for t in targets}) == len(targets)
        assert len(targets) <= 4
        assert {t.url: t.name for t in targets} == self.names


TestAnySequenceOfScrapes = Scrapes.TestCase
