"""Per-team request rate and daily spend limits, shared by replicas through Redis.

Both are fixed windows (a minute, a UTC day) checked in one pipelined round trip before a
request is routed. Redis trouble fails open: a limit is never a reason to drop traffic when
the store that enforces it is down. Without Redis the counters are per process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.auth import Tenant
from gateway.errors import RateLimited
from gateway.metrics import Metrics
from gateway.tasks import Background

log = logging.getLogger("gateway.limits")

PREFIX = "gateway:limits:v1"


def _windows(now: float) -> tuple[int, int, str]:
    minute = int(now // 60)
    day = time.strftime("%Y%m%d", time.gmtime(now))
    return minute, 60 - int(now % 60), day


class Limiter:
    """Checks and records usage against each team's `limits`."""

    def __init__(
        self, redis: Any, timeout_s: float, metrics: Metrics, background: Background
    ) -> None:
        self._redis = redis
        self._timeout = timeout_s
        self._metrics = metrics
        self._local: dict[str, float] = {}
        self._background = background

    async def check(self, tenant: Tenant) -> None:
        """Raise RateLimited when the team is over its request rate or daily budget."""
        limits = tenant.limits
        if limits is None:
            return
        minute, retry_after, day = _windows(time.time())
        rate_key = f"{PREFIX}:rpm:{tenant.team}:{minute}"
        spend_key = f"{PREFIX}:spend:{tenant.team}:{day}"
        try:
            async with asyncio.timeout(self._timeout):
                count, spent = await self._read(rate_key, spend_key)
        except Exception as exc:  # fail open
            self._metrics.cache_errors.labels("limits").inc()
            log.debug("limit check failed", extra={"error": type(exc).__name__})
            return
        if limits.budget_usd_per_day is not None and spent >= limits.budget_usd_per_day:
            self._metrics.rejections.labels(tenant.team, "budget").inc()
            raise RateLimited(
                f"Team {tenant.team!r} has used its daily budget of "
                f"${limits.budget_usd_per_day:g}.",
                code="insufficient_quota",
            )
        if limits.requests_per_minute is not None and count > limits.requests_per_minute:
            self._metrics.rejections.labels(tenant.team, "rate_limit").inc()
            raise RateLimited(
                f"Team {tenant.team!r} is over its limit of "
                f"{limits.requests_per_minute} requests per minute.",
                headers={"retry-after": str(retry_after)},
            )

    async def _read(self, rate_key: str, spend_key: str) -> tuple[int, float]:
        if self._redis is None:
            count = self._local.get(rate_key, 0.0) + 1
            self._local[rate_key] = count
            if len(self._local) > 10_000:
                self._local.clear()
            return int(count), self._local.get(spend_key, 0.0)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(rate_key)
            pipe.expire(rate_key, 120)
            pipe.get(spend_key)
            count, _, spent = await pipe.execute()
        return int(count), float(spent or 0.0)

    def spend(self, tenant: Tenant, usd: float) -> None:
        """Add to the team's spend today (in the background)."""
        if tenant.limits is None or tenant.limits.budget_usd_per_day is None or usd <= 0:
            return
        key = f"{PREFIX}:spend:{tenant.team}:{_windows(time.time())[2]}"
        if self._redis is None:
            self._local[key] = self._local.get(key, 0.0) + usd
            return
        self._background.spawn(self._add(key, usd))

    async def _add(self, key: str, usd: float) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incrbyfloat(key, usd)
                pipe.expire(key, 2 * 86400)
                await asyncio.wait_for(pipe.execute(), self._timeout * 5)
        except Exception as exc:
            self._metrics.cache_errors.labels("limits").inc()
            log.debug("spend record failed", extra={"error": type(exc).__name__})
