"""Replicas of one backend, in-process: the policy keys, the balancer's choice, the plan."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.breakers import Breakers, State
from gateway.planning import make_plan
from gateway.policy import Policy, PolicyInvalid, parse_policy
from gateway.replicas import best, place, two_choices

POLICY = """
backends:
  pool:
    provider: openai
    base_urls: ["http://r0/v1/", "http://r1/v1", "http://r2/v1"]
    max_concurrency: 2
    breaker: {failures_to_open: 1, open_s: 30}
  spare: {provider: openai, base_url: "http://s/v1"}
models:
  m: {to: [pool, spare]}
"""


@pytest.fixture
def policy() -> Policy:
    return parse_policy(POLICY, "p.yaml", {}).policy


def _problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(text, "p.yaml", env or {})
    return [str(p) for p in info.value.problems]


def _plan(policy: Policy, breakers: Breakers) -> list[str]:
    plan = make_plan(policy, "m", policy.models["m"], "chat", None, lambda _: 1.0, breakers)
    return [b.key for b in plan.targets]


def test_each_url_is_a_replica_that_keeps_the_backend_name(policy: Policy) -> None:
    pool = policy.backends["pool"]
    assert pool.replicas is not None
    assert [r.upstream.base_url for r in pool.replicas] == [
        "http://r0/v1",
        "http://r1/v1",
        "http://r2/v1",
    ]
    assert [(r.name, r.key, r.replica) for r in pool.replicas] == [
        ("pool", "pool#0", 0),
        ("pool", "pool#1", 1),
        ("pool", "pool#2", 2),
    ]
    # Same model, price, tier, timeouts and breaker policy as the backend.
    assert all(r.tier == pool.tier and r.breaker == pool.breaker for r in pool.replicas)
    assert all(r.replicas is None for r in pool.replicas)
    spare = policy.backends["spare"]
    assert spare.replicas is None and spare.key == "spare" and spare.replica is None


def test_base_urls_are_checked() -> None:
    head = "backends:\n  a:\n    provider: openai\n"
    tail = "models:\n  m: {to: [a]}\n"
    both = head + "    base_url: http://x/v1\n    base_urls: [http://y/v1]\n" + tail
    assert _problems(both) == [
        "p.yaml:2: backends.a: Value error, give either base_url or base_urls, not both"
    ]
    bad = head + "    base_urls: [http://y/v1, 'user:s3cret@h', http://y/v1/]\n" + tail
    found = _problems(bad)
    assert found == [
        "p.yaml:4: backends.a.base_urls[1]: must be an http:// or https:// URL",
        "p.yaml:4: backends.a.base_urls[2]: the same URL is listed twice",
    ]
    assert not any("s3cret" in p for p in found)
    empty = head + "    base_urls: []\n" + tail
    assert "backends.a.base_urls" in _problems(empty)[0]
    clash = (
        head + "    base_urls: [http://y/v1]\n  'a#0': {provider: openai, base_url: http://z/v1}\n"
    )
    clash += "models:\n  m: {to: [a, 'a#0']}\n"
    assert "clashes" in _problems(clash)[0]
    loaded = head + "    base_urls: [http://y/v1]\n    load: {max_waiting: 4}\n" + tail
    assert _problems(loaded) == ["p.yaml:5: backends.a.load: not supported with base_urls yet"]


def test_base_urls_take_environment_references() -> None:
    text = "backends:\n  a: {provider: openai, base_urls: ['${R0}', '${R1:-http://d/v1}']}\n"
    text += "models:\n  m: {to: [a]}\n"
    backend = parse_policy(text, "p.yaml", {"R0": "http://e/v1"}).policy.backends["a"]
    assert backend.base_urls == ["http://e/v1", "http://d/v1"]
    assert _problems(text)[0].startswith(
        "p.yaml:2: backends.a.base_urls[0]: environment variable R0"
    )


@given(st.lists(st.integers(0, 5), min_size=2, max_size=6), st.integers(0, 2**32))
def test_two_choices_never_takes_the_busiest_when_others_are_less_busy(
    loads: list[int], seed: int
) -> None:
    chosen = two_choices(loads, random.Random(seed).randrange)
    assert 0 <= chosen < len(loads)
    assert any(loads[chosen] <= load for i, load in enumerate(loads) if i != chosen)


def test_two_choices_spreads_equal_loads_and_prefers_idle_ones() -> None:
    draw = random.Random(7).randrange
    spread = Counter(two_choices([0, 0, 0], draw) for _ in range(3000))
    assert all(900 <= spread[i] <= 1100 for i in range(3)), spread
    # One idle replica among busy ones wins whenever it is drawn: 2 of 3 draws.
    idle = Counter(two_choices([4, 0, 4], draw) for _ in range(3000))
    assert 1900 <= idle[1] <= 2100, idle
    assert two_choices([3], draw) == 0


def test_the_plan_lists_replicas_then_the_next_backend(policy: Policy) -> None:
    breakers = Breakers()
    keys = _plan(policy, breakers)
    assert sorted(keys[:3]) == ["pool#0", "pool#1", "pool#2"] and keys[3] == "spare"
    breakers["pool#0"].in_flight = 1
    breakers["pool#2"].in_flight = 1
    # The idle replica goes first whenever it is one of the two drawn; never last.
    firsts = Counter(_plan(policy, breakers)[0] for _ in range(300))
    assert firsts["pool#1"] > 150 and all(_plan(policy, breakers)[2] != "pool#1" for _ in range(50))


def test_an_ejected_replica_goes_last_and_all_ejected_fall_back(policy: Policy) -> None:
    breakers = Breakers()
    now = time.monotonic()
    pool = policy.backends["pool"]
    breakers["pool#1"].failure(now, pool.breaker)
    for _ in range(20):
        keys = _plan(policy, breakers)
        assert sorted(keys[:2]) == ["pool#0", "pool#2"] and keys[2:] == ["spare", "pool#1"]
    breakers["pool#0"].failure(now, pool.breaker)
    breakers["pool#2"].failure(now, pool.breaker)
    keys = _plan(policy, breakers)
    assert keys[0] == "spare" and sorted(keys[1:]) == ["pool#0", "pool#1", "pool#2"]
    assert best([breakers[k].current(now) for k in keys[1:]]) is State.OPEN


def test_saturated_replicas_spill_only_when_every_one_is(policy: Policy) -> None:
    breakers = Breakers()
    for key in ("pool#0", "pool#1"):
        breakers[key].in_flight = 2  # max_concurrency
    keys = _plan(policy, breakers)
    assert keys[:2] == ["pool#2", "spare"] and sorted(keys[2:]) == ["pool#0", "pool#1"]
    breakers["pool#2"].in_flight = 2
    plan = make_plan(policy, "m", policy.models["m"], "chat", None, lambda _: 1.0, breakers)
    assert plan.reason == "spillover" and plan.spilled_from == "pool"
    assert plan.targets[0].key == "spare"


def test_placement_reports_what_refuses(policy: Policy) -> None:
    breakers = Breakers()
    pool = policy.backends["pool"]
    assert pool.replicas is not None
    breakers["pool#2"].pause(time.monotonic(), 30)
    placed = place(pool.replicas, breakers, time.monotonic(), random.Random(1).randrange)
    assert placed.refusing == ["pool#2"] and [r.key for r in placed.degraded] == ["pool#2"]
    assert sorted(r.key for r in placed.ready) == ["pool#0", "pool#1"] and not placed.saturated
