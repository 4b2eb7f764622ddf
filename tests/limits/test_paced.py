"""Paced request rates (`requests_burst`, GCRA): bursts, spacing, every 60 s, shares, replay."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from gateway.errors import RateLimited
from gateway.limits import Limiter
from gateway.limits import limiter as limiter_module
from gateway.metrics import Metrics
from gateway.policy import Limits
from tests.support.limits import T0, Clock, tenant
from tests.support.redis_process import RedisServer


async def _try(limiter: Limiter, t: object) -> bool:
    try:
        await limiter.admit(t, 1, 0.0)  # type: ignore[arg-type]
    except RateLimited:
        return False
    return True


def _windows(admitted: list[float], start: float, end: float) -> tuple[int, int]:
    """The fewest and most admissions in any 60 s span within [start, end], in the whole
    milliseconds the limiter counts."""
    ms = [round(a * 1000) for a in admitted]
    counts = []
    for s in sorted(set(ms) | {a - 60_000 for a in ms}):
        if start * 1000 <= s <= end * 1000 - 60_000:
            counts.append(sum(1 for a in ms if s <= a < s + 60_000))
    return min(counts), max(counts)


async def test_a_burst_then_one_per_interval(redis: aioredis.Redis, clock: Clock) -> None:
    limiter = Limiter(redis, Metrics(), timeout_s=2.0, clock=clock)
    t = tenant(requests_per_minute=60, requests_burst=3)  # one a second, three at once
    first = await limiter.admit(t, 1, 0.0)
    assert first.headers == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "1s",  # back to a full burst in 1 s
    }
    await limiter.admit(t, 1, 0.0)
    third = await limiter.admit(t, 1, 0.0)
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.headers["x-ratelimit-reset-requests"] == "3s"
    with pytest.raises(RateLimited) as info:
        await limiter.admit(t, 1, 0.0)
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.headers["retry-after"] == "1"
    assert info.value.headers["x-ratelimit-reset-requests"] == "1s"
    clock.advance(0.999)
    assert not await _try(limiter, t)
    clock.advance(0.001)
    assert await _try(limiter, t)
    assert not await _try(limiter, t)
    clock.advance(10)  # idle: the burst is back, no more
    assert [await _try(limiter, t) for _ in range(4)] == [True, True, True, False]


async def test_every_sixty_seconds_hold_the_rate_whatever_the_arrivals(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """600 RPM, burst 12, offered 3,000 RPM for 3 minutes with a pause of up to a second now
    and then (about six a minute: a starved client): every 60 s span holds 600 ± 2%, and the
    busiest at most 600 + 12."""
    limiter = Limiter(redis, Metrics(), timeout_s=2.0, clock=clock)
    t = tenant(requests_per_minute=600, requests_burst=12)
    rng = random.Random(7)
    admitted: list[float] = []
    while clock.now < T0 + 180:
        if await _try(limiter, t):
            admitted.append(clock.now)
        pause = rng.random() < 0.002
        clock.advance(rng.uniform(0.5, 1.0) if pause else rng.expovariate(50))
    fewest, most = _windows(admitted, T0, T0 + 180)
    assert most <= 612
    assert fewest >= 588


async def test_the_same_arrivals_in_a_sliding_window_leave_some_spans_short(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """What pacing is for: a clump of arrivals repeats itself a minute later in a sliding
    window, and the span that starts just after it holds less than the limit."""
    limiter = Limiter(redis, Metrics(), timeout_s=2.0, clock=clock)
    t = tenant(requests_per_minute=600)
    admitted: list[float] = []
    while clock.now < T0 + 180:
        if await _try(limiter, t):
            admitted.append(clock.now)
        # 50/s, but nothing from 70 s to 75 s: the slots the first minute left then go unused
        clock.advance(5.0 if abs(clock.now - (T0 + 70)) < 0.01 else 0.02)
    fewest, most = _windows(admitted, T0, T0 + 180)
    assert most == 600
    assert fewest < 588


async def test_four_processes_admit_one_burst_between_them(
    four: list[tuple[Limiter, Metrics]], clock: Clock
) -> None:
    limiters = [limiter for limiter, _ in four]
    t = tenant(requests_per_minute=600, requests_burst=12)
    results = await asyncio.gather(*(_try(limiters[i % 4], t) for i in range(200)))
    clock.advance(1.0)  # ten more are due
    later = await asyncio.gather(*(_try(limiters[i % 4], t) for i in range(200)))
    alone = [m.registry.get_sample_value("gateway_limit_local_decisions_total") for _, m in four]
    assert alone == [None] * 4  # every check was answered by Redis
    assert (sum(results), sum(later)) == (12, 10)


async def test_alone_each_process_paces_its_share() -> None:
    clock = Clock()
    limiter = Limiter(None, Metrics(), processes=4, clock=clock)
    t = tenant(requests_per_minute=600, requests_burst=12)  # a share: 150 RPM, burst 3
    assert [await _try(limiter, t) for _ in range(4)] == [True, True, True, False]
    clock.advance(0.399)
    assert not await _try(limiter, t)
    clock.advance(0.001)  # one every 400 ms
    assert await _try(limiter, t)
    admitted = 0
    for _ in range(60 * 50):
        clock.advance(0.02)
        admitted += await _try(limiter, t)
    assert admitted == 150


async def test_outage_admissions_take_their_place_in_redis_pace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone, a process goes on at its share of the rate from where Redis left the team;
    what it let by alone is counted in Redis' pace once Redis is back."""
    monkeypatch.setattr(limiter_module, "BACKOFF_S", 0.0)
    server = RedisServer(tmp_path / "redis", aof=True)
    server.start()
    client = aioredis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        clock = Clock()
        limiter = Limiter(client, Metrics(), timeout_s=0.5, processes=2, clock=clock)
        t = tenant(requests_per_minute=60, requests_burst=4)  # a share: 30 RPM, burst 2
        for _ in range(4):  # the team's whole burst, through Redis
            limiter.settle(await limiter.admit(t, 1, 0.0), 1, 1, 0.0)
        await limiter.drain()

        server.stop()
        assert not await _try(limiter, t)  # the burst is used up for the whole team
        clock.advance(2.0)  # one every 2 s for each of the two processes
        alone = await limiter.admit(t, 1, 0.0)
        assert alone.local
        assert not await _try(limiter, t)
        limiter.settle(alone, 1, 1, 0.0)
        await limiter.drain()
        assert len(limiter.journal) == 1

        server.start()
        # Replayed first: Redis counts it, so one more fits now, not two.
        assert [await _try(limiter, t) for _ in range(2)] == [True, False]
        assert not limiter.journal
    finally:
        await client.aclose()
        server.stop()


def test_burst_needs_a_rate_no_larger_than_itself() -> None:
    with pytest.raises(ValidationError, match="requests_per_minute, which is not set"):
        Limits(requests_burst=5)
    with pytest.raises(ValidationError, match="cannot exceed"):
        Limits(requests_per_minute=5, requests_burst=6)
    assert Limits(requests_per_minute=5, requests_burst=5).requests_burst == 5
