"""Budgets in Redis: holds before the call, settlement after, periods, soft share, races."""

from __future__ import annotations

import asyncio
import calendar

import pytest
import redis.asyncio as aioredis

from gateway.limits import BudgetExceeded, Limiter, estimate, filled
from gateway.limits.estimate import DEFAULT_OUTPUT_TOKENS, MAX_OUTPUT_TOKENS, route_prices
from gateway.metrics import Metrics
from gateway.policy import Limits, parse_policy
from gateway.providers.base import Usage
from tests.support.limits import Clock, tenant


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def limiter(redis: aioredis.Redis, clock: Clock, metrics: Metrics) -> Limiter:
    return Limiter(redis, metrics, timeout_s=2.0, clock=clock)


async def _spent(redis: aioredis.Redis, team: str, period: str) -> tuple[float, float]:
    keys = [k async for k in redis.scan_iter(f"*{{{team}}}:team:usd:{period}*:h")]
    assert len(keys) == 1
    values = await redis.hmget(keys[0], "spent", "held")
    return tuple(int(v or 0) / 1e9 for v in values)  # type: ignore[return-value]


async def test_holds_then_settles_and_only_a_lone_request_holds_short(
    limiter: Limiter, redis: aioredis.Redis
) -> None:
    t = tenant(budget_usd_per_day=1.0)
    a = await limiter.admit(t, 10, 0.4)
    b = await limiter.admit(t, 10, 0.4)
    assert await _spent(redis, t.team, "d") == (0.0, 0.8)
    with pytest.raises(BudgetExceeded) as info:  # 0.2 left, less than 0.4, and others hold
        await limiter.admit(t, 10, 0.4)
    assert info.value.code == "insufficient_quota"
    assert info.value.headers["retry-after"] == "1"  # only held: in-flight requests may free it
    limiter.settle(a, 10, 5, 0.1)
    limiter.release(b)
    await limiter.drain()
    assert await _spent(redis, t.team, "d") == (0.1, 0.0)
    c = await limiter.admit(t, 10, 0.4)
    d = await limiter.admit(t, 10, 0.4)
    assert (c.holds, d.holds) == ((400_000_000,), (400_000_000,))
    limiter.settle(c, 10, 5, 0.4)
    limiter.settle(d, 10, 5, 0.4)
    await limiter.drain()
    e = await limiter.admit(t, 10, 0.4)  # alone: it holds only the 0.1 left
    assert e.holds == (100_000_000,)
    with pytest.raises(BudgetExceeded):
        await limiter.admit(t, 10, 0.01)  # nothing left beyond e's hold
    limiter.settle(e, 10, 5, 0.2)  # the answer cost more than was held for it
    await limiter.drain()
    # over by e's reservation error (0.2 - 0.1) and no more
    assert await _spent(redis, t.team, "d") == pytest.approx((1.1, 0.0))
    with pytest.raises(BudgetExceeded) as info:
        await limiter.admit(t, 10, 0.01)
    # used up: until the end of the UTC day
    assert 86_400 > int(info.value.headers["retry-after"]) > 3_600


async def test_concurrent_requests_cannot_overspend(
    limiter: Limiter, redis: aioredis.Redis
) -> None:
    """A $0.03 budget, 50 clients at once, each reserving and costing $0.003."""
    t = tenant(budget_usd_per_day=0.03)

    async def one() -> bool:
        try:
            admission = await limiter.admit(t, 100, 0.003)
        except BudgetExceeded:
            return False
        await asyncio.sleep(0.01)
        limiter.settle(admission, 100, 100, 0.003)
        return True

    results = await asyncio.gather(*(one() for _ in range(50)))
    await limiter.drain()
    assert sum(results) == 10
    assert await _spent(redis, t.team, "d") == pytest.approx((0.03, 0.0))


async def test_overspend_stays_within_one_reservation_error(
    limiter: Limiter, redis: aioredis.Redis
) -> None:
    """50 clients at once, each holding $0.0039 and costing $0.0032, in waves: once less than
    a hold is left, one request alone may take the rest, and it alone can overshoot."""
    t = tenant(budget_usd_per_day=0.03)
    admitted, short_now, short_most, errors = 0, 0, 0, [0.0]

    async def client() -> None:
        nonlocal admitted, short_now, short_most
        while True:
            try:
                admission = await limiter.admit(t, 100, 0.0039)
            except BudgetExceeded as refused:
                if refused.headers["retry-after"] != "1":
                    return  # used up, not just held
                await asyncio.sleep(0.002)
                continue
            admitted += 1
            short = admission.holds[0] < 3_900_000
            if short:
                errors.append(0.0032 - admission.holds[0] / 1e9)
            short_now += short
            short_most = max(short_most, short_now)
            await asyncio.sleep(0.01)
            short_now -= short
            limiter.settle(admission, 100, 100, 0.0032)

    await asyncio.gather(*(client() for _ in range(50)))
    await limiter.drain()
    spent, held = await _spent(redis, t.team, "d")
    assert (spent, held) == (pytest.approx(admitted * 0.0032), 0.0)
    # 9 x 0.0032 leaves 0.0012: one request alone holds it, costs 0.0032, and that is the end
    assert short_most == 1  # never two short holds at once
    assert admitted == 10
    assert spent == pytest.approx(0.03 + max(errors))


async def test_day_and_month_roll_over_in_utc(limiter: Limiter, clock: Clock) -> None:
    clock.now = calendar.timegm((2026, 1, 31, 23, 59, 58))
    t = tenant(budget_usd_per_day=1.0, budget_usd_per_month=1.5)
    limiter.settle(await limiter.admit(t, 1, 1.0), 1, 1, 1.0)
    await limiter.drain()
    with pytest.raises(BudgetExceeded, match="daily") as info:
        await limiter.admit(t, 1, 0.1)
    assert info.value.headers["retry-after"] == "2"
    clock.now += 2  # 1 February: a new day and a new month
    limiter.settle(await limiter.admit(t, 1, 1.0), 1, 1, 1.0)
    await limiter.drain()
    clock.now += 86_400  # 2 February: a new day, same month
    admission = await limiter.admit(t, 1, 1.0)
    assert admission.holds == (1_000_000_000, 500_000_000)  # the month has 0.5 left
    limiter.settle(admission, 1, 1, 0.5)
    await limiter.drain()
    with pytest.raises(BudgetExceeded, match="monthly") as info:
        await limiter.admit(t, 1, 0.1)
    assert int(info.value.headers["retry-after"]) == 27 * 86_400  # 2 Feb to 1 Mar


async def test_soft_share_flags_the_admission_and_remaining_is_a_metric(
    limiter: Limiter, metrics: Metrics
) -> None:
    t = tenant(budget_usd_per_day=1.0, soft_budget_share=0.8)
    first = await limiter.admit(t, 1, 0.5)
    assert not first.soft_exceeded
    limiter.settle(first, 1, 1, 0.7)
    await limiter.drain()
    second = await limiter.admit(t, 1, 0.1)  # 0.7 spent + 0.1 held: at 80%
    assert second.soft_exceeded
    remaining = metrics.registry.get_sample_value(
        "gateway_budget_remaining_usd", {"team": t.team, "period": "day"}
    )
    assert remaining == pytest.approx(0.2)


async def test_key_budgets_are_their_own(limiter: Limiter) -> None:
    t = tenant(Limits(budget_usd_per_day=0.1), budget_usd_per_day=10.0)
    limiter.settle(await limiter.admit(t, 1, 0.05), 1, 1, 0.1)
    await limiter.drain()
    with pytest.raises(BudgetExceeded, match="This API key"):
        await limiter.admit(t, 1, 0.05)


POLICY = """
backends:
  cheap:
    provider: openai
    base_url: "http://127.0.0.1:1/v1"
    price: {input_per_mtok: 1, output_per_mtok: 2}
  dear:
    provider: openai
    base_url: "http://127.0.0.1:1/v1"
    price: {input_per_mtok: 10, output_per_mtok: 30}
models:
  auto:
    route:
      - when: {difficulty_at_least: 0.5}
        to: [dear]
      - to: [cheap]
  small: {to: [cheap]}
"""


def test_reservation_prices_the_dearest_backend_a_model_may_use() -> None:
    prices = route_prices(parse_policy(POLICY, "policy.yaml").policy)
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 100}
    est = estimate(prices["auto"], "chat", body, 420)
    assert (est.prompt_tokens, est.output_tokens) == (105, 100)
    assert est.reserve_usd == pytest.approx((105 * 10 + 100 * 30) / 1e6)
    small = estimate(prices["small"], "chat", {"n": 2}, 40)
    assert small.output_tokens == 2 * DEFAULT_OUTPUT_TOKENS
    capped = estimate(prices["small"], "chat", {"max_tokens": 10**6}, 40)
    assert capped.output_tokens == MAX_OUTPUT_TOKENS
    assert estimate(prices["small"], "embeddings", {"max_tokens": 5}, 40).output_tokens == 0


def test_an_answer_without_usage_is_charged_an_estimate() -> None:
    assert filled(Usage(11, 7), 100, 4000) == Usage(11, 7)
    assert filled(Usage(), 100, 4000) == Usage(100, 1000)  # 4 bytes a token
    assert filled(Usage(), 100, 0) == Usage(100, 0)
