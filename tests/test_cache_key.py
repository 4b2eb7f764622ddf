"""Properties of the exact cache's key: stable under JSON key order, distinct for any change.

A key that moves when a client reorders its JSON is a lost hit; a key that stays when the
tenant, model, policy version, endpoint or request changes is an answer served to the wrong
request, or across tenants.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.cache import MemoryCache, cache_key

# What the request parser can hand over: orjson gives 64-bit ints and finite floats.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=40)}
    ),
    min_size=1,
    max_size=4,
)
# A chat request as apps send it, plus fields the gateway does not know (passed through).
bodies = st.fixed_dictionaries(
    {"model": st.text(max_size=10), "messages": messages},
    optional={
        "temperature": st.floats(min_value=0, max_value=2),
        "max_tokens": st.integers(min_value=1, max_value=4096),
        "seed": st.integers(min_value=0, max_value=2**31),
        "stop": st.lists(st.text(max_size=5), max_size=2),
    },
).flatmap(
    lambda body: st.dictionaries(st.text(max_size=12), json_values, max_size=3).map(
        lambda extra: {**extra, **body}
    )
)
# Fields that change how an answer is delivered or billed, not what it says.
DELIVERY = {
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "user": st.text(max_size=10),
    "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    "store": st.booleans(),
    "service_tier": st.sampled_from(["auto", "default", "flex"]),
}
names = st.text(max_size=16)
endpoints = st.sampled_from(["chat", "completions", "embeddings", "responses", "messages"])


def _reordered(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _reordered(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_reordered(v, rng) for v in value]
    return value


@given(
    partition=names, model=names, version=names, endpoint=endpoints, body=bodies, rng=st.randoms()
)
def test_key_order_does_not_change_the_key(
    partition: str,
    model: str,
    version: str,
    endpoint: str,
    body: dict[str, Any],
    rng: random.Random,
) -> None:
    shuffled = _reordered(body, rng)
    assert shuffled == body
    assert cache_key(partition, model, version, endpoint, shuffled) == cache_key(
        partition, model, version, endpoint, body
    )


@given(body=bodies, delivery=st.fixed_dictionaries({}, optional=DELIVERY))
def test_delivery_fields_do_not_change_the_key(
    body: dict[str, Any], delivery: dict[str, Any]
) -> None:
    plain = {k: v for k, v in body.items() if k not in DELIVERY}
    assert cache_key("p", "m", "v1", "chat", {**plain, **delivery}) == cache_key(
        "p", "m", "v1", "chat", plain
    )


@given(
    parts=st.tuples(names, names, names, endpoints),
    other=st.tuples(names, names, names, endpoints),
    which=st.integers(min_value=0, max_value=3),
    body=bodies,
)
def test_tenant_model_version_or_endpoint_changes_the_key(
    parts: tuple[str, str, str, str],
    other: tuple[str, str, str, str],
    which: int,
    body: dict[str, Any],
) -> None:
    # One of partition, model, policy version and endpoint differs; the rest are the same.
    changed = list(parts)
    changed[which] = other[which]
    assume(changed[which] != parts[which])
    partition, model, version, endpoint = changed
    assert cache_key(partition, model, version, endpoint, body) != cache_key(*parts, body)


@given(body=bodies, field=st.text(max_size=12), value=json_values)
def test_a_different_request_changes_the_key(body: dict[str, Any], field: str, value: Any) -> None:
    assume(field not in DELIVERY and body.get(field, ...) != value)
    assert cache_key("p", "m", "v1", "chat", {**body, field: value}) != cache_key(
        "p", "m", "v1", "chat", body
    )


@given(body=bodies, index=st.integers(min_value=0, max_value=3), text=st.text(max_size=40))
def test_a_different_message_changes_the_key(body: dict[str, Any], index: int, text: str) -> None:
    turns = body["messages"]
    turn = turns[index % len(turns)]
    assume(turn["content"] != text)
    edited = [*turns]
    edited[index % len(turns)] = {**turn, "content": text}
    assert cache_key("p", "m", "v1", "chat", {**body, "messages": edited}) != cache_key(
        "p", "m", "v1", "chat", body
    )


@given(team=names, left=names, right=names, body=bodies)
def test_partition_and_model_never_run_into_each_other(
    team: str, left: str, right: str, body: dict[str, Any]
) -> None:
    # A team named "<team>:<left>" asking for "<right>", and "<team>" asking "<left>:<right>".
    first = cache_key(f"team:{team}:{left}", right, "v1", "chat", body)
    second = cache_key(f"team:{team}", f"{left}:{right}", "v1", "chat", body)
    assert first != second


async def test_the_in_process_purge_finds_team_partitions_and_models() -> None:
    cache = MemoryCache()
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    for partition, model in (("team:a", "m:1"), ("team:a", "other"), ("team:b", "m:1")):
        await cache.set(cache_key(partition, model, "v", "chat", body), b"x", 60)
    assert await cache.purge("team:a", "m:1") == 1
    assert await cache.purge(None, "m:1") == 1
    assert await cache.purge("team:a", None) == 1
    assert await cache.purge(None, None) == 0
