"""Fixtures of the limiter tests: a client of the test's own Redis, a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.limits import Limiter
from gateway.metrics import Metrics
from tests.support.limits import Clock


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def four(redis_url: str, clock: Clock) -> AsyncIterator[list[tuple[Limiter, Metrics]]]:
    """Four limiters with their own connections and metrics, as four gateway processes
    would be: each knows it is one of four (as `GATEWAY_REPLICAS` x workers tells one)."""
    clients = [aioredis.from_url(redis_url) for _ in range(4)]
    metrics = [Metrics() for _ in range(4)]
    yield [
        (Limiter(c, m, timeout_s=5.0, processes=4, clock=clock), m)
        for c, m in zip(clients, metrics, strict=True)
    ]
    for c in clients:
        await c.aclose()
