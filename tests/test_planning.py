"""Planning invariants, in-process: rule choice, target order, disabled and open backends."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.breakers import FAILURES_TO_OPEN, Breakers
from gateway.errors import (
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    PolicyError,
    UpstreamUnavailable,
)
from gateway.planning import choose_rule, make_plan, resolve_model, sticky_draw
from gateway.policy import Policy, parse_policy

POLICY = """
backends:
  open-a: {provider: openai, base_url: "http://a/v1", tier: open}
  open-b: {provider: openai, base_url: "http://b/v1", tier: open, max_concurrency: 2}
  gpt: {provider: openai, base_url: "http://g/v1", api_key: k, tier: closed}
  nokey: {provider: openai, base_url: "http://n/v1", tier: closed}
  claude: {provider: anthropic, api_key: k, tier: closed}
models:
  auto:
    route:
      - when: {difficulty_at_least: 0.7}
        to: [gpt, claude]
      - when: {difficulty_at_least: 0.4, difficulty_below: 0.7}
        to: [nokey, open-b]
      - to: [open-a, gpt]
  shared:
    route:
      - when: {closed_share: 0.2}
        to: [gpt]
      - to: [open-a]
  alias: {to: [open-b, open-a]}
  embed-only: {to: [claude]}
teams:
  t: {keys: [sk-t], allowed_models: [alias]}
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY, "test.yaml").policy


def _never(rule: int) -> float:
    return 1.0


PARSED = parse_policy(POLICY, "test.yaml").policy
scores = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(deadline=None)
@given(score=scores)
def test_the_first_matching_rule_leads_and_the_default_follows(score: float) -> None:
    policy = PARSED
    route = policy.models["auto"]
    plan = make_plan(policy, "auto", route, "chat", score, _never, Breakers())
    names = [b.name for b in plan.targets]
    if score >= 0.7:
        assert names[:2] == ["gpt", "claude"] and plan.reason == "rule"
    elif score >= 0.4:
        assert names[0] == "open-b" and plan.reason == "rule"
    else:
        assert names[0] == "open-a" and plan.reason == "default"
    # Invariants: no disabled backend, no duplicate, the default rule's targets always present.
    assert "nokey" not in names
    assert len(names) == len(set(names))
    assert {"open-a", "gpt"} <= set(names)


@settings(deadline=None)
@given(score=scores, broken=st.sets(st.sampled_from(["open-a", "open-b", "gpt", "claude"])))
def test_open_breakers_go_last_but_stay(score: float, broken: set[str]) -> None:
    policy = PARSED
    breakers = Breakers()
    for name in broken:
        for _ in range(FAILURES_TO_OPEN):
            breakers[name].failure()
    plan = make_plan(policy, "auto", policy.models["auto"], "chat", score, _never, breakers)
    names = [b.name for b in plan.targets]
    ready = [n for n in names if n not in broken]
    assert names == ready + [n for n in names if n in broken]
    unbroken = make_plan(policy, "auto", policy.models["auto"], "chat", score, _never, Breakers())
    assert sorted(names) == sorted(b.name for b in unbroken.targets)


def test_a_saturated_backend_goes_last_and_spills_over(policy: Policy) -> None:
    breakers = Breakers()
    breakers["open-b"].in_flight = 2
    plan = make_plan(policy, "alias", policy.models["alias"], "chat", None, _never, breakers)
    assert [b.name for b in plan.targets] == ["open-a", "open-b"]
    assert (plan.reason, plan.spilled_from) == ("spillover", "open-b")
    breakers["open-b"].in_flight = 1
    plan = make_plan(policy, "alias", policy.models["alias"], "chat", None, _never, breakers)
    assert (plan.reason, plan.spilled_from) == ("alias", None)


def test_closed_share_rules_use_the_calibrated_threshold(policy: Policy) -> None:
    route = policy.models["shared"]
    assert choose_rule(route, 0.5, lambda rule: 0.4) == (0, "calibration")
    assert choose_rule(route, 0.3, lambda rule: 0.4) == (1, "default")
    assert choose_rule(route, None, lambda rule: 0.0) == (1, "default")


def test_backends_that_cannot_serve_the_endpoint_are_dropped(policy: Policy) -> None:
    with pytest.raises(UpstreamUnavailable):
        make_plan(
            policy,
            "embed-only",
            policy.models["embed-only"],
            "embeddings",
            None,
            _never,
            Breakers(),
        )


def test_resolve_model(policy: Policy) -> None:
    assert resolve_model(policy, "auto", None)[0] == "auto"
    with pytest.raises(ModelNotFound):
        resolve_model(policy, "nope", None)
    with pytest.raises(PermissionDenied):
        resolve_model(policy, "auto", frozenset({"alias"}))


def test_a_breaker_opens_after_failures_and_closes_on_success() -> None:
    breaker = Breakers()["x"]
    now = time.monotonic()
    for _ in range(FAILURES_TO_OPEN - 1):
        breaker.failure(now)
    assert breaker.usable(now)
    breaker.failure(now)
    assert not breaker.usable(now)
    breaker.success()
    assert breaker.usable(now)


SPLIT = """
backends:
  a: {provider: openai, base_url: "http://a/v1", tier: open}
  b: {provider: openai, base_url: "http://b/v1", tier: open}
models:
  ab:
    route:
      - split: {a: 90, b: 10}
"""


def test_a_split_is_sticky_per_user_and_follows_its_weights() -> None:
    policy = parse_policy(SPLIT, "split.yaml").policy
    route = policy.models["ab"]
    assert route.rules[0].to == ["a", "b"] and route.splits

    def first(body: dict[str, object]) -> str:
        sticky = sticky_draw(body)
        plan = make_plan(policy, "ab", route, "chat", 0.5, _never, Breakers(), sticky=sticky)
        assert plan.reason == "split" and len(plan.targets) == 2  # the other is the fallback
        return plan.targets[0].name

    users = [first({"user": f"user-{i}", "messages": []}) for i in range(2000)]
    assert 0.08 <= users.count("b") / 2000 <= 0.12
    alice = {"user": "alice", "messages": [{"role": "user", "content": "one"}]}
    assert {first({**alice, "messages": [{"role": "user", "content": t}]}) for t in "xyz"} == {
        first(alice)
    }
    talk = [{"role": "user", "content": "first turn"}]
    assert first({"messages": talk}) == first(
        {"messages": [*talk, {"role": "user", "content": "2"}]}
    )


def test_a_split_needs_positive_weights_and_no_to() -> None:
    with pytest.raises(PolicyError):
        parse_policy(SPLIT.replace("{a: 90, b: 10}", "{a: 0}"), "split.yaml")
    with pytest.raises(PolicyError):
        parse_policy(SPLIT.replace("split: {a: 90, b: 10}", "split: {a: 1}, to: [a]"), "s.yaml")


def test_tools_skip_backends_that_cannot_call_them() -> None:
    text = SPLIT.replace(
        'b: {provider: openai, base_url: "http://b/v1", tier: open}',
        'b: {provider: openai, base_url: "http://b/v1", tier: open, tools: false}',
    ).replace("split: {a: 90, b: 10}", "to: [b, a]")
    policy = parse_policy(text, "tools.yaml").policy
    route = policy.models["ab"]
    plan = make_plan(policy, "ab", route, "chat", 0.5, _never, Breakers(), needs_tools=True)
    assert [b.name for b in plan.targets] == ["a"]
    only_b = parse_policy(text.replace("to: [b, a]", "to: [b]"), "tools.yaml").policy
    with pytest.raises(InvalidRequest, match="can call tools") as info:
        make_plan(
            only_b, "ab", only_b.models["ab"], "chat", 0.5, _never, Breakers(), needs_tools=True
        )
    assert info.value.param == "tools"


@settings(deadline=None)
@given(score=scores, paused=st.sets(st.sampled_from(["open-a", "open-b", "gpt", "claude"])))
def test_backends_paused_by_retry_after_go_last_but_stay(score: float, paused: set[str]) -> None:
    policy = PARSED
    breakers = Breakers()
    now = time.monotonic()
    for name in paused:
        breakers[name].pause(now, 30.0)
    plan = make_plan(policy, "auto", policy.models["auto"], "chat", score, _never, breakers)
    names = [b.name for b in plan.targets]
    assert names == [n for n in names if n not in paused] + [n for n in names if n in paused]
    unpaused = make_plan(policy, "auto", policy.models["auto"], "chat", score, _never, Breakers())
    assert sorted(names) == sorted(b.name for b in unpaused.targets)


@settings(deadline=None)
@given(score=scores)
def test_past_the_soft_budget_the_open_tier_is_kept_while_it_has_a_target(score: float) -> None:
    policy = PARSED
    route = policy.models["auto"]
    plain = make_plan(policy, "auto", route, "chat", score, _never, Breakers())
    soft = make_plan(policy, "auto", route, "chat", score, _never, Breakers(), open_first=True)
    assert [b.name for b in soft.targets] == [b.name for b in plain.targets if b.tier == "open"]
    # `budget` says the soft share moved the request off a closed first choice.
    moved = plain.targets[0].tier == "closed"
    assert soft.reason == ("budget" if moved else plain.reason)
    # No open target at all: the closed ones stay, for the plan's usual reason.
    only = policy.models["embed-only"]
    kept = make_plan(policy, "embed-only", only, "chat", score, _never, Breakers(), open_first=True)
    assert [b.name for b in kept.targets] == ["claude"] and kept.reason == "alias"


def test_past_the_soft_budget_a_broken_open_tier_keeps_the_closed_one() -> None:
    policy = PARSED
    route = policy.models["auto"]
    breakers = Breakers()
    for _ in range(FAILURES_TO_OPEN):
        breakers["open-a"].failure()
    plan = make_plan(policy, "auto", route, "chat", 0.1, _never, breakers, open_first=True)
    assert [b.name for b in plan.targets] == ["gpt", "open-a"] and plan.reason == "default"
    breakers["open-b"].in_flight = 2  # saturated: it queues, the closed tier is not used
    plan = make_plan(policy, "auto", route, "chat", 0.5, _never, breakers, open_first=True)
    assert [b.name for b in plan.targets] == ["open-b", "open-a"]
