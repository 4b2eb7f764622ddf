"""Policy keys for limits, and policy errors that never echo a line that may hold a key."""

from __future__ import annotations

import pytest

from gateway.auth import KeyRing
from gateway.errors import PolicyError
from gateway.limits.rules import rules_for
from gateway.policy import parse_policy

POLICY = """
backends:
  open: {provider: openai, base_url: "http://127.0.0.1:1/v1", price: {input_per_mtok: 0.1}}
models:
  m: {to: [open]}
teams:
  search:
    keys: [sk-search-secret]
    limits:
      requests_per_minute: 600
      budget_usd_per_day: 5
      tokens_per_minute: 100000
      budget_usd_per_month: 100
      soft_budget_share: 0.8
      fail: closed
    key_limits: {requests_per_minute: 100}
"""


def test_limit_keys_parse_and_become_rules() -> None:
    policy = parse_policy(POLICY, "p.yaml").policy
    tenant = KeyRing(policy).authenticate("Bearer sk-search-secret")
    rules = rules_for(tenant)
    assert [(w.scope.split(":")[0], w.kind, w.limit) for w in rules.windows] == [
        ("team", "requests", 600),
        ("team", "tokens", 100_000),
        ("key", "requests", 100),
    ]
    assert [(b.period, b.limit_usd) for b in rules.budgets] == [("day", 5.0), ("month", 100.0)]
    assert (rules.fail, rules.soft_share, rules.tag) == ("closed", 0.8, "{search}")
    assert "sk-search-secret" not in repr(rules) + "".join(rules.window_keys())


@pytest.mark.parametrize("bad", ["fail: sometimes", "soft_budget_share: 1.5"])
def test_bad_limit_values_are_refused(bad: str) -> None:
    with pytest.raises(PolicyError, match="limits"):
        parse_policy(POLICY.replace("fail: closed", bad), "p.yaml")


def test_a_yaml_error_does_not_echo_the_line() -> None:
    text = 'teams:\n  t:\n    keys: ["sk-live-secret-1234]\n'
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    assert "sk-live-secret" not in str(info.value)
    assert str(info.value).startswith("p.yaml:3: invalid YAML")  # where the quote opens
