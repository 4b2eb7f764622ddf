"""What the limit check costs one request: estimate + admit + settle, in-process or in Redis.

    PYTHONPATH=. python bench/limits_check.py [--requests 3000]            # in-process
    PYTHONPATH=. python bench/limits_check.py --redis                      # its own redis-server
    PYTHONPATH=. python bench/limits_check.py --redis --concurrency 16     # CPU per request
    PYTHONPATH=. python bench/limits_check.py --redis --slice-share 0      # without slices

A team with request, token and budget limits that are never reached
(`bench/policies/limits.yaml`), against the same team without limits. Per request: the
estimate, the admission (with Redis: one script call, awaited as a request awaits it) and
the settlement's dispatch, timed together; the settlement's own script call runs in the
background, as in the gateway, and is awaited between requests, outside the timing. Prints
the median over 5 rounds of each round's p50, in microseconds, and the difference; with
Redis also the p50 of a script that does nothing, on the limiter's own connection and on
redis-py (the round trip alone).

`--concurrency N`: N requests at once, each waiting 1 ms for its "upstream" between admit
and settle, as a loaded worker sees them (admissions and settlements of one team coalesce).
Runs on uvloop, as the gateway does. Prints this process's CPU time per request with limits
and without (Redis' own CPU is the server's, on its own core), median of 5 rounds: what the
limiter takes from a worker's throughput.

The limiter slices as the gateway does by default (`GATEWAY_LIMITS_SLICE_SHARE`, one process:
see gateway/limits/slices.py); `--slice-share 0`: every admission is its own script call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.auth import KeyRing, Tenant
from gateway.limits import Limiter, estimate
from gateway.limits.estimate import route_prices
from gateway.metrics import Metrics
from gateway.policy import parse_policy
from gateway.settings import Settings

SLICE_SHARE = [float(Settings.model_fields["limits_slice_share"].default)]
POLICY = Path(__file__).resolve().parent / "policies" / "limits.yaml"
BODY = {"model": "m", "messages": [{"role": "user", "content": "x" * 900}], "temperature": 0.2}


def _setup(redis_url: str | None, limited: bool) -> tuple[Tenant, Limiter, Any, Any]:
    """The bench team's tenant (without its limits unless `limited`), a limiter on its own
    client of `redis_url` (or in-process), that client, the route's prices."""
    os.environ.setdefault("UPSTREAM_BASE_URL", "http://127.0.0.1:1/v1")
    os.environ.setdefault("BENCH_TEAM_KEY", "sk-bench-team-key")
    policy = parse_policy(POLICY.read_text(), str(POLICY)).policy
    tenant = KeyRing(policy).authenticate("Bearer " + os.environ["BENCH_TEAM_KEY"])
    assert tenant is not None
    if not limited:
        tenant = Tenant(tenant.team, tenant.partition, None, None, tenant.key_id, None)
    client: Any = None
    if redis_url:
        import redis.asyncio as aioredis

        client = aioredis.from_url(redis_url)
    limiter = Limiter(client, Metrics(), timeout_s=1.0, slice_share=SLICE_SHARE[0])
    prices = route_prices(policy)["*"]
    return tenant, limiter, client, prices


async def _round(requests: int, redis_url: str | None, limited: bool) -> float:
    """The p50 of one round, in microseconds."""
    tenant, limiter, client, prices = _setup(redis_url, limited)
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        est = estimate(prices, "chat", BODY, 1000)
        admission = await limiter.admit(tenant, est.prompt_tokens, est.reserve_usd)
        limiter.settle(admission, 60, 5, 0.0001)
        samples.append(time.perf_counter() - started)
        await limiter.drain()
    await limiter.close()
    if client is not None:
        await client.aclose()
    return statistics.median(samples) * 1e6


async def _bare(requests: int, redis_url: str) -> tuple[float, float]:
    """p50 µs of a script that does nothing (`return 1`): the limiter's own connection, then
    redis-py's, to tell the round trip from the limits' work."""
    import redis.asyncio as aioredis

    from gateway.limits.resp import for_client

    client = aioredis.from_url(redis_url)
    own = for_client(client, "return 1", 2.0)
    assert own is not None
    theirs = client.register_script("return 1")
    out = []
    for call in (own, theirs):
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            await call(keys=["k"], args=["1"])
            samples.append(time.perf_counter() - started)
        out.append(statistics.median(samples) * 1e6)
    await own.aclose()
    await client.aclose()
    return out[0], out[1]


async def _cpu_round(requests: int, redis_url: str | None, limited: bool, conc: int) -> float:
    """CPU µs per request of one round with `conc` requests in flight."""
    tenant, limiter, client, prices = _setup(redis_url, limited)
    left = [requests]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            est = estimate(prices, "chat", BODY, 1000)
            admission = await limiter.admit(tenant, est.prompt_tokens, est.reserve_usd)
            await asyncio.sleep(0.001)
            limiter.settle(admission, 60, 5, 0.0001)

    await asyncio.gather(*(worker() for _ in range(conc)))  # warm: connect, load the script
    left[0] = requests
    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(conc)))
    await limiter.drain()
    spent = time.process_time() - started
    await limiter.close()
    if client is not None:
        await client.aclose()
    return spent / requests * 1e6


def _measure_cpu(requests: int, redis_url: str | None, conc: int) -> None:
    label = "Redis" if redis_url else "in-process"
    with_limits, without = [], []
    import uvloop  # the gateway's loop

    for _ in range(5):
        with_limits.append(uvloop.run(_cpu_round(requests, redis_url, True, conc)))
        without.append(uvloop.run(_cpu_round(requests, redis_url, False, conc)))
    a, b = statistics.median(with_limits), statistics.median(without)
    print(
        f"CPU per request ({label}, {conc} in flight): {a:.1f} us with limits, {b:.1f} us "
        f"without, +{a - b:.1f} us (medians of 5 rounds of {requests})"
    )


def _measure(requests: int, redis_url: str | None, conc: int = 0) -> None:
    if conc:
        _measure_cpu(requests, redis_url, conc)
        return
    label = "Redis" if redis_url else "in-process"
    with_limits, without = [], []
    for _ in range(5):
        with_limits.append(asyncio.run(_round(requests, redis_url, True)))
        without.append(asyncio.run(_round(requests, redis_url, False)))
    a, b = statistics.median(with_limits), statistics.median(without)
    print(
        f"limit check ({label}): p50 {a:.1f} us with limits, {b:.1f} us without, "
        f"+{a - b:.1f} us (medians of 5 rounds of {requests})"
    )
    if redis_url:
        own, theirs = asyncio.run(_bare(requests, redis_url))
        print(f"a script doing nothing: p50 {own:.1f} us own connection, {theirs:.1f} us redis-py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument(
        "--redis", nargs="?", const="own", default=None, help="a URL, or none: its own server"
    )
    parser.add_argument("--concurrency", type=int, default=0, help="CPU per request, N at once")
    parser.add_argument("--slice-share", type=float, default=SLICE_SHARE[0], help="0: none")
    args = parser.parse_args()
    SLICE_SHARE[0] = args.slice_share
    if args.redis != "own":
        _measure(args.requests, args.redis, args.concurrency)
        return 0
    from tests.support.redis_process import RedisServer

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            _measure(args.requests, server.url, args.concurrency)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
