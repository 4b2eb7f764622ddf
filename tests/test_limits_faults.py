"""Redis slow, killed, restarted: the local share holds, fail-closed refuses, spend comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.errors import RateLimited
from gateway.limits import Limiter, LimitsUnavailable, slices
from gateway.limits import limiter as limiter_module
from gateway.metrics import Metrics
from tests.support.limits import Clock, tenant
from tests.support.redis_process import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    s = RedisServer(tmp_path / "redis")
    s.start()
    yield s
    s.stop()


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    yield c
    await c.aclose()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every check asks Redis again, so the test sees the moment it is back.
    monkeypatch.setattr(limiter_module, "BACKOFF_S", 0.0)


def _local(metrics: Metrics, team: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "gateway_limit_local_decisions_total", {"team": team, "result": result}
    )
    return value or 0.0


async def _admitted(limiter: Limiter, t: object, n: int) -> int:
    count = 0
    for _ in range(n):
        try:
            await limiter.admit(t, 1, 0.0)  # type: ignore[arg-type]
        except RateLimited:
            continue
        count += 1
    return count


async def test_killed_redis_local_share_then_spend_replayed(
    server: RedisServer, client: aioredis.Redis
) -> None:
    clock, metrics = Clock(), Metrics()
    limiter = Limiter(client, metrics, timeout_s=0.5, processes=2, clock=clock)
    t = tenant(requests_per_minute=10, budget_usd_per_day=1.0)
    for _ in range(2):
        limiter.settle(await limiter.admit(t, 1, 0.1), 1, 1, 0.1)
    await limiter.drain()
    in_flight = await limiter.admit(t, 1, 0.1)

    server.stop()
    # This process's share is 10 // 2 = 5, and it already let 3 through.
    local = []
    for _ in range(5):
        with contextlib.suppress(RateLimited):
            local.append(await limiter.admit(t, 1, 0.1))
    assert len(local) == 2
    assert all(a.local for a in local)
    assert (_local(metrics, t.team, "admitted"), _local(metrics, t.team, "refused")) == (2, 3)
    for a in local:
        limiter.settle(a, 1, 1, 0.05)
    limiter.settle(in_flight, 1, 1, 0.1)
    await limiter.drain()
    assert len(limiter.journal) == 3

    server.start()  # a Redis without persistence comes back empty
    clock.advance(1)
    back = await limiter.admit(t, 1, 0.0)
    assert not back.local
    await limiter.drain()
    assert not limiter.journal
    keys = [k async for k in client.scan_iter(f"*{{{t.team}}}:team:usd:*:h")]
    spent = int(await client.hget(keys[0], "spent") or 0) / 1e9
    assert spent == pytest.approx(0.2)  # what was spent while Redis was away
    replayed = metrics.registry.get_sample_value(
        "gateway_limit_spend_replayed_usd_total", {"team": t.team}
    )
    assert replayed == pytest.approx(0.2)
    # The requests it admitted alone were put in Redis' window before Redis decided again
    # (in flight, 2 local, then this one), so Redis counts them: 10 - 4 left.
    assert back.headers["x-ratelimit-remaining-requests"] == "6"
    window = [k async for k in client.scan_iter(f"*{{{t.team}}}:team:requests:z")]
    assert await client.zcard(window[0]) == 4


async def test_a_process_with_no_more_requests_replays_its_journal_by_itself(
    server: RedisServer, client: aioredis.Redis
) -> None:
    """Spend made alone reaches Redis once it is back, also in a process that gets no request
    after the outage to probe Redis with (its clients' connections went to another)."""
    limiter = Limiter(client, Metrics(), timeout_s=0.5, processes=2, clock=Clock())
    t = tenant(requests_per_minute=10, budget_usd_per_day=1.0)
    await limiter.admit(t, 1, 0.0)
    server.stop()
    alone = await limiter.admit(t, 1, 0.1)
    assert alone.local
    limiter.settle(alone, 1, 1, 0.25)
    await limiter.drain()
    assert len(limiter.journal) == 1
    server.start()
    for _ in range(200):  # no admission from here on: only the limiter's own retries
        if not limiter.journal:
            break
        await asyncio.sleep(0.05)
    assert not limiter.journal
    keys = [k async for k in client.scan_iter(f"*{{{t.team}}}:team:usd:*:h")]
    assert int(await client.hget(keys[0], "spent") or 0) / 1e9 == pytest.approx(0.25)
    await limiter.close()


async def test_local_shares_hold_the_whole_limit_when_redis_spread_it_unevenly(
    server: RedisServer, client: aioredis.Redis
) -> None:
    """Two processes, 10 a minute: Redis let one take 8 and the other 2. Alone, each may use
    its share (5) only as far as its part of what Redis said was left, plus what of its own
    has left the window since, so the two together never pass 10 in any minute."""
    clock = Clock()
    a, b = (Limiter(client, Metrics(), timeout_s=0.5, processes=2, clock=clock) for _ in "ab")
    t = tenant(requests_per_minute=10)
    at: list[float] = []
    assert await _admitted(a, t, 8) == 8
    at += [clock.now] * 8
    clock.advance(30)
    assert await _admitted(b, t, 2) == 2
    at += [clock.now] * 2
    server.stop()
    for _ in range(4):  # every 30 s for two minutes, both ask ten times
        for limiter in (a, b):
            admitted = await _admitted(limiter, t, 10)
            at += [clock.now] * admitted
        clock.advance(30)
    # Any 60 s window: (now - 60, now] over the admission times.
    for end in sorted(set(at)):
        assert sum(1 for x in at if end - 60 < x <= end) <= 10
    # Not refusing everything either: what left the window was taken again.
    assert len(at) >= 10 + 8 + 2


async def test_a_hung_redis_times_out_into_the_local_share_not_unlimited(
    server: RedisServer, client: aioredis.Redis
) -> None:
    metrics = Metrics()
    limiter = Limiter(client, metrics, timeout_s=0.05, processes=4, clock=Clock())
    t = tenant(requests_per_minute=8)
    server.pause()
    try:
        assert await _admitted(limiter, t, 10) == 2  # 8 // 4
    finally:
        server.resume()
    assert _local(metrics, t.team, "refused") == 8


async def test_fail_closed_refuses_while_redis_is_down(
    server: RedisServer, client: aioredis.Redis
) -> None:
    limiter = Limiter(client, Metrics(), timeout_s=0.5, clock=Clock())
    t = tenant(requests_per_minute=100, fail="closed")
    await limiter.admit(t, 1, 0.0)
    server.stop()
    with pytest.raises(LimitsUnavailable) as info:
        await limiter.admit(t, 1, 0.0)
    assert info.value.http_status == 503
    assert info.value.headers["retry-after"] == "1"


async def test_without_redis_each_process_enforces_its_share_exactly() -> None:
    clock = Clock()
    limiter = Limiter(None, Metrics(), processes=3, clock=clock)
    t = tenant(requests_per_minute=9, budget_usd_per_day=0.3)
    assert await _admitted(limiter, t, 5) == 3
    clock.advance(60)
    a = await limiter.admit(t, 1, 0.05)
    limiter.settle(a, 1, 1, 0.1)  # the day's share (0.1) is used up
    with pytest.raises(RateLimited) as info:
        await limiter.admit(t, 1, 0.01)
    assert info.value.code == "insufficient_quota"


async def test_a_check_that_timed_out_but_ran_in_redis_leaves_no_hold(
    server: RedisServer, client: aioredis.Redis
) -> None:
    """Redis hung while a check was on its way: the check timed out and the request was
    decided alone, but Redis ran the script once it could. Settling gives that hold back too,
    instead of leaving it until the lease ends."""
    limiter = Limiter(client, Metrics(), timeout_s=0.05, processes=2, clock=Clock())
    t = tenant(budget_usd_per_day=0.3)
    limiter.settle(await limiter.admit(t, 1, 0.01), 1, 1, 0.01)  # connected, script loaded
    await limiter.drain()
    server.pause()
    try:
        alone = await limiter.admit(t, 1, 0.2)
    finally:
        server.resume()
    assert alone.local
    assert alone.holds == (145_000_000,)  # alone: its share of the $0.29 left, short
    keys = [k async for k in client.scan_iter(f"*{{{t.team}}}:team:usd:*:h")]
    for _ in range(100):  # Redis runs what was sent while it hung
        if int(await client.hget(keys[0], "held") or 0):
            break
        await asyncio.sleep(0.02)
    assert int(await client.hget(keys[0], "held") or 0) == 200_000_000
    limiter.settle(alone, 1, 1, 0.15)
    await limiter.drain()
    for _ in range(200):
        if not limiter.journal:
            break
        await asyncio.sleep(0.05)
    spent, held = (int(v or 0) for v in await client.hmget(keys[0], "spent", "held"))
    assert (spent, held) == (160_000_000, 0)
    await limiter.close()


async def test_redis_killed_with_a_slice_out_gets_it_back_in_order(
    server: RedisServer, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slice that goes back while Redis is away is journaled with the settlements, and
    replayed before them: the request still in flight from it is held, then settled."""
    monkeypatch.setattr(slices, "SLICE_S", 0.3)
    limiter = Limiter(client, Metrics(), timeout_s=0.5, processes=2, slice_share=0.01)
    t = tenant(requests_per_minute=100_000, budget_usd_per_day=100.0)
    first = await limiter.admit(t, 1, 0.001)
    assert first.slice is not None and not first.local
    server.stop()
    await asyncio.sleep(0.4)  # the slice goes back: the call fails and is journaled
    await limiter.drain()
    alone = await limiter.admit(t, 1, 0.001)
    assert alone.local and alone.slice is None  # no slices while Redis is away
    limiter.settle(first, 1, 1, 0.001)
    limiter.settle(alone, 1, 1, 0.002)
    await limiter.drain()
    assert len(limiter.journal) == 3  # the slice, then the two settlements
    server.start()  # back empty
    for _ in range(200):
        if not limiter.journal:
            break
        await asyncio.sleep(0.05)
    assert not limiter.journal
    keys = [k async for k in client.scan_iter(f"*{{{t.team}}}:team:usd:*:h")]
    spent, held = await client.hmget(keys[0], "spent", "held")
    assert (int(spent or 0), int(held or 0)) == (3_000_000, 0)
    window = [k async for k in client.scan_iter(f"*{{{t.team}}}:team:requests:z")]
    assert await client.zcard(window[0]) == 2  # the two requests, not the slice
    await limiter.close()
