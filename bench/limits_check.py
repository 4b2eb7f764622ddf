"""What the limit check costs one request in-process: estimate + admit + settle, no Redis.

    python bench/limits_check.py [--requests 3000]

A team with request, token and budget limits that are never reached
(`bench/policies/limits.yaml`); prints the median over 5 rounds in microseconds. With Redis
the same work plus one script call (a round trip) is done; this measures the gateway's own
part.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from gateway.auth import KeyRing
from gateway.limits import Limiter, estimate
from gateway.limits.estimate import route_prices
from gateway.metrics import Metrics
from gateway.policy import parse_policy

POLICY = Path(__file__).resolve().parent / "policies" / "limits.yaml"
BODY = {"model": "m", "messages": [{"role": "user", "content": "x" * 900}], "temperature": 0.2}


async def _round(requests: int) -> float:
    os.environ.setdefault("UPSTREAM_BASE_URL", "http://127.0.0.1:1/v1")
    os.environ.setdefault("BENCH_TEAM_KEY", "sk-bench-team-key")
    policy = parse_policy(POLICY.read_text(), str(POLICY)).policy
    tenant = KeyRing(policy).authenticate("Bearer " + os.environ["BENCH_TEAM_KEY"])
    limiter = Limiter(None, Metrics())
    prices = route_prices(policy)["*"]
    started = time.perf_counter()
    for _ in range(requests):
        est = estimate(prices, "chat", BODY, 1000)
        admission = await limiter.admit(tenant, est.prompt_tokens, est.reserve_usd)
        limiter.settle(admission, 60, 5, 0.0001)
    return (time.perf_counter() - started) / requests * 1e6


def main() -> int:
    """Print the median microseconds per request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    rounds = [asyncio.run(_round(args.requests)) for _ in range(5)]
    print(f"limit check: {statistics.median(rounds):.1f} us per request (median of 5 rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
