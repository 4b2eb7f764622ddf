"""Key hashing, key records and the in-memory key table, without a server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import pytest

from gateway.auth import KeyHasher, KeyRing
from gateway.errors import AuthenticationFailed, InvalidRequest, NotFound
from gateway.keys import KeyChange, NewKey, VirtualKeys, parse
from gateway.keys.store import MemoryStore
from gateway.keys.table import NO_SECRET
from gateway.policy import parse_policy
from gateway.state import PolicyState

POLICY = """
backends:
  open: {provider: openai, base_url: "http://127.0.0.1:1/v1"}
models:
  m: {to: [open]}
  other: {to: [open]}
teams:
  search:
    keys: [sk-search-secret]
    allowed_models: [m, other]
    limits: {requests_per_minute: 600}
    key_limits: {requests_per_minute: 100}
"""
SECRET = b"a-secret-for-tests"


def _policy(text: str = POLICY) -> PolicyState:
    return PolicyState.build(parse_policy(text, "p.yaml"))


def test_policy_keys_are_looked_up_by_their_hmac() -> None:
    state = _policy()
    hasher = KeyHasher(SECRET)
    tenant = KeyRing(state.loaded.policy, hasher).authenticate("Bearer sk-search-secret")
    expected = hmac.new(SECRET, b"sk-search-secret", hashlib.sha256).hexdigest()
    assert hasher.digest("sk-search-secret") == expected
    assert tenant.key_id == expected[:16]
    assert tenant.key_id != hashlib.sha256(b"sk-search-secret").hexdigest()[:16]
    # Without a secret: a built-in one, the same in every process (shared per-key limits).
    assert not KeyHasher().configured
    assert KeyHasher().digest("k") == KeyHasher(None).digest("k") != hasher.digest("k")


def _table(disabled: str | None = None) -> tuple[VirtualKeys, KeyRing]:
    state = _policy()
    keys = VirtualKeys(MemoryStore(), KeyHasher(SECRET), disabled=disabled)
    return keys, KeyRing(state.loaded.policy, KeyHasher(SECRET), keys)


def test_a_made_key_authenticates_with_its_team_and_own_limits() -> None:
    keys, ring = _table()
    reloaded = ring.for_policy(_policy().loaded.policy)  # a reload keeps the API keys
    spec = NewKey(team="search", allowed_models=["m"], budget_usd_per_day=2.0)
    record, key = asyncio.run(keys.create(spec, _policy().loaded.policy))
    for each in (ring, reloaded):
        tenant = each.authenticate(f"Bearer {key}")
        assert (tenant.team, tenant.partition, tenant.key_id) == (
            "search",
            "team:search",
            record.id,
        )
        assert tenant.allowed_models == frozenset({"m"})
        assert tenant.limits is not None and tenant.limits.requests_per_minute == 600
        assert tenant.key_limits is not None and tenant.key_limits.budget_usd_per_day == 2.0
    assert ring.authenticate(f"Bearer {key}") is ring.authenticate(f"Bearer {key}")
    asyncio.run(keys.revoke(record.id))
    with pytest.raises(AuthenticationFailed):
        ring.authenticate(f"Bearer {key}")


def test_a_key_without_own_limits_takes_the_teams_key_limits() -> None:
    keys, ring = _table()
    _, key = asyncio.run(keys.create(NewKey(team="search"), _policy().loaded.policy))
    tenant = ring.authenticate(f"Bearer {key}")
    assert tenant.allowed_models == frozenset({"m", "other"})
    assert tenant.key_limits is not None and tenant.key_limits.requests_per_minute == 100


def test_a_team_shrinking_its_models_shrinks_its_keys() -> None:
    keys, ring = _table()
    spec = NewKey(team="search", allowed_models=["m", "other"])
    _, key = asyncio.run(keys.create(spec, _policy().loaded.policy))
    narrower = _policy(POLICY.replace("allowed_models: [m, other]", "allowed_models: [other]"))
    tenant = ring.for_policy(narrower.loaded.policy).authenticate(f"Bearer {key}")
    assert tenant.allowed_models == frozenset({"other"})
    gone = _policy(POLICY.replace("search:", "elsewhere:"))
    with pytest.raises(AuthenticationFailed):
        ring.for_policy(gone.loaded.policy).authenticate(f"Bearer {key}")


def test_expired_keys_are_refused() -> None:
    keys, ring = _table()
    spec = NewKey.model_validate({"team": "search", "expires_at": time.time() + 0.05})
    _, key = asyncio.run(keys.create(spec, _policy().loaded.policy))
    ring.authenticate(f"Bearer {key}")
    time.sleep(0.06)
    with pytest.raises(AuthenticationFailed, match="expired"):
        ring.authenticate(f"Bearer {key}")


def test_the_key_api_refuses_without_a_secret() -> None:
    keys, _ = _table(disabled=NO_SECRET)
    with pytest.raises(NotFound, match="GATEWAY_KEY_SECRET"):
        asyncio.run(keys.create(NewKey(team="search"), _policy().loaded.policy))


def test_budget_shorthands_and_team_only_limits() -> None:
    assert NewKey(team="t", budget_usd_per_month=5).merged_limits().budget_usd_per_month == 5  # type: ignore[union-attr]
    with pytest.raises(InvalidRequest) as info:
        KeyChange.model_validate(
            {"budget_usd_per_day": 1, "limits": {"budget_usd_per_day": 2}}
        ).merged_limits()
    assert info.value.param == "budget_usd_per_day"
    with pytest.raises(InvalidRequest) as info:
        KeyChange.model_validate({"limits": {"soft_budget_share": 0.5}}).merged_limits()
    assert info.value.param == "limits.soft_budget_share"


def test_parse_names_the_field_never_the_value() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(NewKey, b'{"team": "t", "name": "sk-gw-' + b"x" * 300 + b'"}')
    assert info.value.param == "name" and "sk-gw-" not in info.value.message
    with pytest.raises(InvalidRequest, match="JSON object"):
        parse(NewKey, b"{nope")


def test_several_processes_without_redis_refuse_the_key_api() -> None:
    from gateway.metrics import Metrics
    from gateway.settings import Settings

    hasher, metrics = KeyHasher(SECRET), Metrics()
    alone = VirtualKeys.from_settings(Settings(workers=1), None, hasher, metrics)
    assert alone.disabled is None and alone.store.kind == "memory"
    several = VirtualKeys.from_settings(Settings(workers=2), None, hasher, metrics)
    assert several.disabled is not None and "GATEWAY_REDIS_URL" in several.disabled
    unset = VirtualKeys.from_settings(Settings(), None, KeyHasher(), metrics)
    assert unset.disabled == NO_SECRET
