"""Calibrators on two replicas share one score distribution through a real Redis.

The Redis is one the tests started (the `redis_db` fixture): a database for each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.difficulty import ShareCalibrator
from tests.support.redis_server import RedisDb

KEY = "test:routing:calib"


class FrozenClock:
    def __init__(self, now: float = 2_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis_key(redis_db: RedisDb) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    client = aioredis.Redis.from_url(redis_db.url)
    try:
        yield client, KEY
    finally:
        await client.aclose()


async def test_sync_merges_two_replicas(redis_key: tuple[aioredis.Redis, str]) -> None:
    client, key = redis_key
    clock = FrozenClock()
    low = ShareCalibrator(0.5, clock=clock, prior_weight=0)
    high = ShareCalibrator(0.5, clock=clock, prior_weight=0)
    for i in range(1_000):
        low.observe(0.1 + 0.2 * i / 1_000)  # scores in [0.1, 0.3)
        high.observe(0.7 + 0.2 * i / 1_000)  # scores in [0.7, 0.9)
        low.record(False)
        high.record(True)
    assert low.threshold() < 0.3
    assert high.threshold() > 0.7

    await low.sync(client, key)
    await high.sync(client, key)
    await low.sync(client, key)  # pulls what `high` pushed; pushes nothing twice

    for calibrator in (low, high):
        assert calibrator.observed() == pytest.approx(2_000)
        assert 0.29 <= calibrator.threshold() <= 0.71  # the median sits between the modes
        assert calibrator.realised_share() == pytest.approx(0.5)
    assert await client.ttl(f"{key}:{int(clock.now // 10)}") > 0


async def test_new_observations_after_sync_count_once(
    redis_key: tuple[aioredis.Redis, str],
) -> None:
    client, key = redis_key
    clock = FrozenClock()
    calibrator = ShareCalibrator(0.2, clock=clock, prior_weight=0)
    for _ in range(100):
        calibrator.observe(0.5)
    await calibrator.sync(client, key)
    for _ in range(50):
        calibrator.observe(0.5)
    assert calibrator.observed() == pytest.approx(150)  # 100 merged + 50 pending
    await calibrator.sync(client, key)
    assert calibrator.observed() == pytest.approx(150)


async def test_failed_sync_keeps_counts_for_the_next_one(
    redis_key: tuple[aioredis.Redis, str],
) -> None:
    client, key = redis_key
    clock = FrozenClock()
    calibrator = ShareCalibrator(0.2, clock=clock, prior_weight=0)
    for _ in range(40):
        calibrator.observe(0.9)
    no_retry = Retry(NoBackoff(), retries=0)
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=no_retry)
    try:
        with pytest.raises(RedisConnectionError):
            await calibrator.sync(dead, key)
    finally:
        await dead.aclose()
    await calibrator.sync(client, key)
    peer = ShareCalibrator(0.2, clock=clock, prior_weight=0)
    await peer.sync(client, key)
    assert peer.observed() == pytest.approx(40)
