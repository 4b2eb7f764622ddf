"""Sliding windows in Redis: exact counts under a controlled clock, tokens, headers, races."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from gateway.auth import Tenant
from gateway.errors import RateLimited
from gateway.limits import Limiter
from gateway.metrics import Metrics
from gateway.policy import Limits
from tests.support.limits import T0, Clock, same_team, tenant


@pytest.fixture
def limiter(redis: aioredis.Redis, clock: Clock) -> Limiter:
    return Limiter(redis, Metrics(), timeout_s=2.0, clock=clock)


async def test_window_slides_instead_of_resetting_each_minute(
    limiter: Limiter, clock: Clock
) -> None:
    t = tenant(requests_per_minute=5)
    for _ in range(5):
        await limiter.admit(t, 10, 0.0)
        clock.advance(1)
    clock.now = T0 + 10
    with pytest.raises(RateLimited) as info:
        await limiter.admit(t, 10, 0.0)
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.headers["retry-after"] == "50"  # the first request leaves at T0 + 60
    assert info.value.headers["x-ratelimit-remaining-requests"] == "0"
    clock.now = T0 + 59.999
    with pytest.raises(RateLimited):
        await limiter.admit(t, 10, 0.0)
    clock.now = T0 + 60
    await limiter.admit(t, 10, 0.0)
    with pytest.raises(RateLimited):  # the second leaves at T0 + 61
        await limiter.admit(t, 10, 0.0)


async def test_no_sixty_second_span_ever_holds_more_than_the_limit(
    limiter: Limiter, clock: Clock
) -> None:
    """A request every 250 ms for 3 minutes, across minute boundaries."""
    t = tenant(requests_per_minute=7)
    admitted: list[float] = []
    for i in range(720):
        clock.now = T0 + i * 0.25
        try:
            await limiter.admit(t, 1, 0.0)
        except RateLimited:
            continue
        admitted.append(clock.now)
    for start in admitted:
        assert sum(1 for a in admitted if start <= a < start + 60) <= 7
    assert len(admitted) == 7 * 3  # and the limit is used in full: 7 a minute


async def test_headers_report_the_tightest_window(limiter: Limiter, clock: Clock) -> None:
    t = tenant(Limits(requests_per_minute=3), requests_per_minute=10, tokens_per_minute=1000)
    first = await limiter.admit(t, 100, 0.0)
    assert first.headers == {
        "x-ratelimit-limit-requests": "3",  # the key's own limit is tighter than the team's
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "1m0s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": "1m0s",
    }
    clock.advance(20.5)
    second = await limiter.admit(t, 100, 0.0)
    assert second.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-reset-requests"] == "39.5s"  # when the first leaves


async def test_tokens_settle_with_real_usage(limiter: Limiter, clock: Clock) -> None:
    t = tenant(tokens_per_minute=100)
    a = await limiter.admit(t, 40, 0.0)
    limiter.settle(a, 30, 40, 0.0)  # 70 tokens really used
    await limiter.drain()
    clock.advance(5)
    with pytest.raises(RateLimited) as info:
        await limiter.admit(t, 40, 0.0)
    assert info.value.headers["retry-after"] == "55"
    b = await limiter.admit(t, 30, 0.0)
    assert b.headers["x-ratelimit-remaining-tokens"] == "0"
    limiter.release(b)  # failed: its estimate is given back
    await limiter.drain()
    c = await limiter.admit(t, 20, 0.0)
    assert c.headers["x-ratelimit-remaining-tokens"] == "10"


async def test_a_request_larger_than_the_limit_is_refused_outright(limiter: Limiter) -> None:
    t = tenant(tokens_per_minute=100)
    with pytest.raises(RateLimited, match="this request alone"):
        await limiter.admit(t, 101, 0.0)


async def test_key_limits_and_team_limits_both_hold(limiter: Limiter) -> None:
    key_limits = Limits(requests_per_minute=2)
    a = tenant(key_limits, "ka", requests_per_minute=3)
    b = same_team(a, "kb", key_limits)
    await limiter.admit(a, 1, 0.0)
    await limiter.admit(a, 1, 0.0)
    with pytest.raises(RateLimited, match="This API key"):
        await limiter.admit(a, 1, 0.0)
    await limiter.admit(b, 1, 0.0)
    with pytest.raises(RateLimited, match="Team"):  # the team's third
        await limiter.admit(b, 1, 0.0)


async def test_concurrent_admits_across_processes_never_pass_the_limit(
    four: list[tuple[Limiter, Metrics]],
) -> None:
    """Four gateway processes' limiters: should a check time out on this loaded machine, its
    local share keeps the total under the limit too; while Redis answers, exactly the limit
    goes through."""
    limiters = [limiter for limiter, _ in four]
    t = tenant(requests_per_minute=50, tokens_per_minute=10_000)

    async def one(i: int) -> bool:
        try:
            await limiters[i % 4].admit(t, 10, 0.0)
        except RateLimited:
            return False
        return True

    results = await asyncio.gather(*(one(i) for i in range(400)))
    # A check that times out (the first ones wait up to 2 s, connecting included) is decided
    # alone; Redis may still count it, so the bound is the limit plus what the shares let by.
    alone = sum(
        m.registry.get_sample_value(
            "gateway_limit_local_decisions_total", {"team": t.team, "result": "admitted"}
        )
        or 0.0
        for _, m in four
    )
    assert alone <= 4 * (50 // 4)
    if alone:
        assert sum(results) <= 50 + alone
    else:
        assert sum(results) == 50


async def test_redis_clock_is_used_without_an_injected_one(redis: aioredis.Redis) -> None:
    limiter = Limiter(redis, Metrics(), timeout_s=2.0)
    t = tenant(requests_per_minute=1)
    await limiter.admit(t, 1, 0.0)
    with pytest.raises(RateLimited) as info:
        await limiter.admit(t, 1, 0.0)
    assert 59 <= int(info.value.headers["retry-after"]) <= 60
    keys = [k.decode() async for k in redis.scan_iter(f"*{{{t.team}}}*")]
    assert keys and all(f"{{{t.team}}}" in k for k in keys)  # one hash tag: one slot


def _script_calls(limiter: Limiter) -> list[tuple[int, int]]:
    """Records each script call the limiter makes: (keys sent, calls carried)."""
    assert limiter._store is not None
    resp = limiter._store._resp
    assert resp is not None
    call = resp.call
    sizes: list[tuple[int, int]] = []

    def counting(keys: list[str], args: list[str]) -> asyncio.Future[object]:
        sizes.append((len(keys), len(args)))  # one call per argument
        return call(keys, args)

    resp.call = counting  # type: ignore[method-assign]
    return sizes


async def test_concurrent_checks_share_round_trips_and_stay_exact(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """While one team's script call is in flight, its next checks and settlements wait and
    go together as one call: fewer round trips than requests, and still exactly the limit."""
    limiter = Limiter(redis, Metrics(), timeout_s=5.0, clock=clock)
    calls = _script_calls(limiter)
    t = tenant(requests_per_minute=50, tokens_per_minute=100_000, budget_usd_per_day=1.0)

    async def one() -> bool:
        try:
            admission = await limiter.admit(t, 10, 0.001)
        except RateLimited:
            return False
        limiter.settle(admission, 10, 5, 0.001)
        return True

    results = await asyncio.gather(*(one() for _ in range(200)))
    await limiter.drain()
    assert sum(results) == 50
    assert sum(n for _, n in calls) == 200 + 50  # every check and settlement ran once
    assert len(calls) < 100  # in far fewer script calls
    keys = [k async for k in redis.scan_iter(f"*{{{t.team}}}:team:usd:*:h")]
    spent, held = (int(v or 0) for v in await redis.hmget(keys[0], "spent", "held"))
    assert (spent, held) == (50 * 1_000_000, 0)


async def test_one_batch_mixes_keys_of_one_team_and_counts_each_exactly(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """Calls of three keys of one team (each with its own limit, the team's on top) share
    batches: each call's set of keys is sent once per batch, and each call finds its own."""
    limiter = Limiter(redis, Metrics(), timeout_s=5.0, clock=clock)
    sizes = _script_calls(limiter)
    first = tenant(Limits(requests_per_minute=7), key="a", requests_per_minute=1000)
    keys = [first, same_team(first, "b", Limits(requests_per_minute=11))]
    keys.append(same_team(first, "c", Limits(requests_per_minute=13)))

    async def one(t: Tenant) -> bool:
        try:
            admission = await limiter.admit(t, 1, 0.0)
        except RateLimited:
            return False
        limiter.settle(admission, 1, 1, 0.0)
        return True

    offered = [keys[i % 3] for i in range(90)]
    results = await asyncio.gather(*(one(t) for t in offered))
    await limiter.drain()
    admitted = {t.key_id: 0 for t in keys}
    for t, ok in zip(offered, results, strict=True):
        admitted[t.key_id] += ok
    assert admitted == {"a": 7, "b": 11, "c": 13}
    # Four keys per call (the team's window, the key's window): a batch sends at most the
    # three sets, however many calls it carries.
    assert all(k <= 3 * 4 for k, _ in sizes)
    assert any(n > 3 for _, n in sizes), "no batch carried more calls than key sets"
    await limiter.close()


async def test_a_purge_of_only_released_entries_is_not_a_redis_error(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """A released request's token entry weighs 0; when only such entries leave the window,
    the running sum moves by 0 (the script once sent "-0", which INCRBY refuses, and the
    check fell back to the local share)."""
    limiter = Limiter(redis, Metrics(), timeout_s=2.0, clock=clock)
    failures: list[BaseException] = []
    record = limiter._failed
    limiter._failed = lambda exc: (failures.append(exc), record(exc))[1]  # type: ignore[method-assign]
    t = tenant(tokens_per_minute=10_000)
    limiter.release(await limiter.admit(t, 100, 0.0))  # its entry is now "<id>:0"
    await limiter.drain()
    clock.advance(30)
    await limiter.admit(t, 100, 0.0)  # still in the window after the next step
    clock.advance(31)  # only the released entry leaves
    third = await limiter.admit(t, 100, 0.0)
    assert not third.local and failures == []
    await limiter.close()
