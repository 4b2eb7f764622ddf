"""Active health checks, for backends whose policy has a `health_check:`.

Each worker GETs ``base_url + path`` every `interval_s`. `failures` consecutive failed checks
(no 2xx within `timeout_s`, refused, reset) open the backend's circuit, and keep it open
while they go on failing: a hung backend is marked down without a request having to time out
on it. A check that passes lets an open circuit admit its probe at once instead of waiting
out `open_s`; only a real request closes it. A backend with `base_urls` has each replica
checked, and its own circuit opened, on its own.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gateway.errors import GatewayError
from gateway.policy import Backend
from gateway.policy.resilience import HealthCheck

if TYPE_CHECKING:
    from gateway.services import Services

TICK_S = 0.25


async def check(services: Services, backend: Backend, policy: HealthCheck) -> bool:
    """One check of one backend, applied to its circuit; True if it passed."""
    provider = services.providers[backend.provider]
    try:
        await provider.check(backend.upstream, policy.path, policy.timeout_s)
    except GatewayError:
        services.metrics.health_checks.labels(backend.name, "failed").inc()
        return False
    services.metrics.health_checks.labels(backend.name, "ok").inc()
    return True


async def run(services: Services) -> None:
    """Check every backend that asks for it when its interval is due."""
    due: dict[str, float] = {}
    failed: dict[str, int] = {}
    while True:
        now = time.monotonic()
        batch: list[tuple[Backend, HealthCheck]] = []
        for backend in services.state.loaded.policy.backends.values():
            policy = backend.health_check
            if policy is None or not backend.enabled:
                continue
            for way in backend.replicas or (backend,):  # each replica on its own
                if due.get(way.key, 0.0) <= now:
                    due[way.key] = now + policy.interval_s
                    batch.append((way, policy))
        results = await asyncio.gather(*(check(services, b, p) for b, p in batch))
        now = time.monotonic()
        for (backend, policy), ok in zip(batch, results, strict=True):
            breaker = services.breakers[backend.key]
            if ok:
                failed[backend.key] = 0
                breaker.healthy(now)
                continue
            failed[backend.key] = failed.get(backend.key, 0) + 1
            if failed[backend.key] >= policy.failures:
                breaker.trip(now, backend.breaker)
        await asyncio.sleep(TICK_S)
