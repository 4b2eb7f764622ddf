"""Slices of large limits (gateway/limits/slices.py): most admissions without a round trip,
never past a limit, and everything given back."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.auth import Tenant
from gateway.errors import RateLimited
from gateway.limits import BudgetExceeded, Limiter, slices
from gateway.limits.rules import PREFIX
from gateway.metrics import Metrics
from tests.support.limits import tenant

SHARE = 0.01


@pytest.fixture(autouse=True)
def quick_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slices, "SLICE_S", 0.3)


@pytest.fixture
async def four(redis_url: str) -> AsyncIterator[list[Limiter]]:
    """Four processes' limiters, slicing, on their own connections (Redis' clock)."""
    clients = [aioredis.from_url(redis_url) for _ in range(4)]
    limiters = [
        Limiter(c, Metrics(), timeout_s=5.0, processes=4, slice_share=SHARE) for c in clients
    ]
    yield limiters
    for limiter in limiters:
        await limiter.close()
    for c in clients:
        await c.aclose()


def count_calls(limiter: Limiter) -> list[int]:
    """Wrap the limiter's script calls: [admission calls so far, every script call so far]."""
    store: Any = limiter._store
    seen = [0, 0]
    run, call = store._run, store._call

    async def counted(tag: str, keys: tuple[str, ...], args: str) -> Any:
        seen[0] += 1
        return await run(tag, keys, args)

    def every(keys: list[str], args: list[str]) -> Any:
        seen[1] += 1
        return call(keys, args)

    store._run, store._call = counted, every
    return seen


async def window_sum(redis: aioredis.Redis, t: Tenant, kind: str) -> int:
    value = await redis.get(f"{PREFIX}:{{{t.team}}}:team:{kind}:n")
    return int(value or 0)


async def budget(redis: aioredis.Redis, t: Tenant) -> tuple[int, int]:
    keys = [k async for k in redis.scan_iter(f"*{{{t.team}}}:team:usd:d*:h")]
    assert len(keys) == 1
    spent, held = await redis.hmget(keys[0], "spent", "held")
    return int(spent or 0), int(held or 0)


async def settle_all(limiters: list[Limiter]) -> None:
    await asyncio.sleep(slices.SLICE_S + 0.2)  # every slice has gone back
    for limiter in limiters:
        await limiter.drain()


async def test_most_admissions_need_no_round_trip_and_redis_ends_exact(
    four: list[Limiter], redis: aioredis.Redis
) -> None:
    t = tenant(requests_per_minute=100_000, tokens_per_minute=10_000_000, budget_usd_per_day=100)
    limiter = four[0]
    calls = count_calls(limiter)
    admitted = [await limiter.admit(t, 100, 0.001) for _ in range(200)]
    # A slice holds 250 requests: one call took it; the first request went with it.
    assert calls[0] <= 2, calls
    assert all(a.slice is not None for a in admitted)
    assert admitted[-1].headers["x-ratelimit-limit-requests"] == "100000"
    remaining = int(admitted[-1].headers["x-ratelimit-remaining-requests"])
    assert 100_000 - 200 - 250 <= remaining <= 100_000 - 200
    # Half settle while the slice is out (no call of their own: they go back with it), half
    # after it went back (it made them entries and holds of their own).
    for a in admitted[:100]:
        limiter.settle(a, 100, 20, 0.0005)
    await settle_all(four)
    assert calls[1] == 2, calls  # the slice taken, the slice given back
    assert await window_sum(redis, t, "requests") == 200
    assert await window_sum(redis, t, "tokens") == 100 * 120 + 100 * 100
    assert await budget(redis, t) == (100 * 500_000, 100 * 1_000_000)
    for a in admitted[100:]:
        limiter.settle(a, 100, 20, 0.0005)
    await limiter.drain()
    assert await window_sum(redis, t, "tokens") == 200 * 120
    assert await budget(redis, t) == (200 * 500_000, 0)
    # A released request counts once and gives its tokens and hold back.
    limiter.release(await limiter.admit(t, 100, 0.001))
    await settle_all(four)
    assert await window_sum(redis, t, "requests") == 201
    assert await window_sum(redis, t, "tokens") == 200 * 120
    assert await budget(redis, t) == (200 * 500_000, 0)


async def test_four_processes_with_slices_never_pass_the_limit(
    four: list[Limiter], redis: aioredis.Redis
) -> None:
    limit = 8_000  # a slice is 20 requests; slices stop with 320 left
    t = tenant(requests_per_minute=limit)
    accepted = 0

    async def client(limiter: Limiter, tries: int) -> None:
        nonlocal accepted
        for _ in range(tries):
            try:
                a = await limiter.admit(t, 10, 0.0)
            except RateLimited:
                continue
            accepted += 1
            limiter.settle(a, 10, 1, 0.0)
            if random.random() < 0.2:
                await asyncio.sleep(0)

    await asyncio.gather(*(client(four[i % 4], 300) for i in range(32)))  # 9,600 tries
    assert limit - 4 * 20 <= accepted <= limit
    assert await window_sum(redis, t, "requests") <= limit
    await settle_all(four)
    # Slices gone back: exactly what was admitted is counted, and the rest can be taken.
    assert await window_sum(redis, t, "requests") == accepted
    for _ in range(limit - accepted):
        await four[0].admit(t, 10, 0.0)
    with pytest.raises(RateLimited):
        await four[1].admit(t, 10, 0.0)
    assert await window_sum(redis, t, "requests") == limit


async def test_a_budget_is_not_overspent_through_slices(
    four: list[Limiter], redis: aioredis.Redis
) -> None:
    t = tenant(budget_usd_per_day=2.0)  # a slice holds $0.005: 10 requests of $0.0005
    spent = 0

    async def client(limiter: Limiter) -> None:
        nonlocal spent
        while True:
            try:
                a = await limiter.admit(t, 10, 0.0005)
            except BudgetExceeded as refused:
                if refused.headers["retry-after"] != "1":
                    return  # used up
                await asyncio.sleep(0.01)  # only held by requests in flight, or by slices
                continue
            await asyncio.sleep(random.random() / 1000)
            limiter.settle(a, 10, 10, 0.0005)
            spent += 500_000

    await asyncio.wait_for(asyncio.gather(*(client(four[i % 4]) for i in range(40))), 60)
    await settle_all(four)
    total, held = await budget(redis, t)
    assert (total, held) == (spent, 0)
    assert total <= 2_000_000_000
    assert total >= 2_000_000_000 - 500_000  # nothing left unsold but one request's worth


async def test_small_limits_are_not_sliced(four: list[Limiter]) -> None:
    # 600 a minute: a slice would be 1 request; every check goes to Redis on its own.
    t = tenant(requests_per_minute=600, budget_usd_per_day=1000)
    calls = count_calls(four[0])
    admitted = [await four[0].admit(t, 10, 0.0) for _ in range(20)]
    assert calls[0] == 20 and all(a.slice is None for a in admitted)
    # A budget too small for 8 such requests per slice is not sliced either.
    t = tenant(budget_usd_per_day=1.0)  # a slice would hold $0.0025
    calls = count_calls(four[1])
    admitted = [await four[1].admit(t, 10, 0.001) for _ in range(5)]
    assert calls[0] == 5 and all(a.slice is None for a in admitted)


@pytest.fixture
async def lone(redis_url: str) -> AsyncIterator[Limiter]:
    """One process's limiter, slicing, on its own connection."""
    client = aioredis.from_url(redis_url)
    limiter = Limiter(client, Metrics(), timeout_s=5.0, processes=1, slice_share=SHARE)
    yield limiter
    await limiter.close()
    await client.aclose()


def answered_too_late(limiter: Limiter, exc: BaseException) -> None:
    """The limiter's admission calls run in Redis, but this process sees `exc` instead."""
    store: Any = limiter._store
    ask = store.ask

    async def late(*args: Any) -> Any:
        await ask(*args)  # it ran in Redis...
        raise exc  # ...too late here

    store.ask = late


async def test_a_slice_nobody_uses_goes_back_by_itself(
    lone: Limiter, redis: aioredis.Redis
) -> None:
    t = tenant(requests_per_minute=100_000)
    first = await lone.admit(t, 10, 0.0)
    assert first.slice is not None
    assert await window_sum(redis, t, "requests") == 1_000  # the slice
    await settle_all([lone])
    assert await window_sum(redis, t, "requests") == 1
    lone.settle(first, 10, 1, 0.0)
    await lone.drain()
    assert await window_sum(redis, t, "requests") == 1


async def test_a_slice_granted_after_the_check_gave_up_is_given_back(
    lone: Limiter, redis: aioredis.Redis
) -> None:
    """Redis ran the slice's call, but too late for this process (a timeout): the process
    decides alone and gives the slice back, or it would stay counted for a minute."""
    answered_too_late(lone, TimeoutError("limits: Redis did not answer in time"))
    t = tenant(requests_per_minute=100_000, budget_usd_per_day=100.0)
    alone = await lone.admit(t, 10, 0.001)
    assert alone.local and alone.slice is None
    lone.settle(alone, 10, 1, 0.001)
    await lone.drain()
    assert await window_sum(redis, t, "requests") == 1  # the request, not the slice
    assert await budget(redis, t) == (1_000_000, 0)


async def test_a_slice_granted_for_a_request_cancelled_meanwhile_is_given_back(
    lone: Limiter, redis: aioredis.Redis
) -> None:
    """The same when the request is cancelled while it waits (its client left)."""
    answered_too_late(lone, asyncio.CancelledError())
    t = tenant(requests_per_minute=100_000, budget_usd_per_day=100.0)
    with pytest.raises(asyncio.CancelledError):
        await lone.admit(t, 10, 0.001)
    await lone.drain()
    assert await window_sum(redis, t, "requests") == 0
    assert await budget(redis, t) == (0, 0)


async def test_a_settlement_never_overtakes_its_slice_going_back(
    lone: Limiter, redis: aioredis.Redis
) -> None:
    """The slice's return fails (journaled); the settlement of a request still in flight from
    it comes after: it waits behind the journal, or Redis would get the return second and
    hold that request's estimate until the lease ends. Replayed twice, a return counts once."""
    limiter = lone
    store: Any = limiter._store
    real, sent = store.settle, []
    failing = [1]

    async def flaky(s: Any) -> None:
        sent.append(s)
        if failing[0]:
            failing[0] -= 1
            raise TimeoutError("limits: Redis did not answer in time")
        await real(s)

    store.settle = flaky
    t = tenant(requests_per_minute=100_000, budget_usd_per_day=100.0)
    settled = await limiter.admit(t, 10, 0.001)
    first = await limiter.admit(t, 10, 0.001)
    assert first.slice is not None
    limiter.settle(settled, 10, 1, 0.002)  # goes back with the slice
    await settle_all([limiter])  # the slice goes back: that call fails
    assert len(limiter.journal) == 1
    limiter.settle(first, 10, 1, 0.001)  # behind the journaled return
    assert len(limiter.journal) == 2
    for _ in range(100):  # the journal is retried every second
        if not limiter.journal:
            break
        await asyncio.sleep(0.05)
    assert not limiter.journal
    assert await window_sum(redis, t, "requests") == 2
    assert await budget(redis, t) == (3_000_000, 0)
    await real(sent[0])  # the return once more, as a replay of a call that had run
    assert await window_sum(redis, t, "requests") == 2
    assert await budget(redis, t) == (3_000_000, 0)
