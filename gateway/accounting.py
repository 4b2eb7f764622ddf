"""Tokens → cost at the policy's prices, and savings against the all-closed reference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.limits import filled
from gateway.metrics import Metrics
from gateway.policy import Backend, Policy
from gateway.wire import Usage

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.services import Services


def account(
    metrics: Metrics,
    policy: Policy,
    backend: Backend,
    usage: Usage,
    team: str,
    cache_hit: bool = False,
) -> tuple[float, float]:
    """Record tokens, cost and savings for one answer; return (cost, savings) in USD.

    A cache hit costs nothing upstream; its saving is what the reference would have charged.
    """
    tier = backend.tier
    cost = 0.0 if cache_hit else backend.price.cost(usage.prompt_tokens, usage.completion_tokens)
    reference = policy.backends.get(policy.savings_reference or "")
    baseline = (
        reference.price.cost(usage.prompt_tokens, usage.completion_tokens)
        if reference is not None
        else backend.price.cost(usage.prompt_tokens, usage.completion_tokens)
    )
    savings = baseline - cost
    if not cache_hit:
        metrics.tokens.labels(backend.name, tier, team, "prompt").inc(usage.prompt_tokens)
        metrics.tokens.labels(backend.name, tier, team, "completion").inc(usage.completion_tokens)
        metrics.cost.labels(backend.name, tier, team).inc(cost)
    metrics.baseline_cost.labels(team).inc(baseline)
    # Counters cannot go down: a backend pricier than the reference shows as zero saving
    # here, and the difference is visible as cost above baseline.
    metrics.savings.labels("cache" if cache_hit else tier, team).inc(max(savings, 0.0))
    return cost, savings


def charge(
    services: Services, call: Call, backend: Backend, usage: Usage, answer_bytes: int
) -> None:
    """Account an answer from a backend: the routing decision, cost, savings, and settle the
    budget reservation (an answer without usage is charged an estimate from its size)."""
    assert call.plan is not None
    reason = "fallback" if backend is not call.plan.targets[0] else call.plan.reason
    services.metrics.decisions.labels(call.model, backend.tier, reason).inc()
    if call.admission is not None:
        sent = answer_bytes if call.endpoint != "embeddings" else 0
        usage = filled(usage, call.admission.prompt_tokens, sent)
    cost, savings = account(services.metrics, call.state.loaded.policy, backend, usage, call.team)
    _record(call, usage, cost, cost + savings)
    services.limiter.settle(call.admission, usage.prompt_tokens, usage.completion_tokens, cost)


async def charge_unread(services: Services, call: Call) -> None:
    """A stream whose client left before reading any of it: the backend answered, so close
    its upstream and charge the prompt and the first block (a stream cut there)."""
    opened, call.unread = call.unread, None
    assert opened is not None
    try:
        await opened.events.aclose()
    finally:
        charge(services, call, opened.backend, opened.usage, len(opened.first))


def charge_hit(services: Services, call: Call, usage: Usage) -> None:
    """Account a cache hit: no upstream cost; its saving is the reference's price."""
    services.metrics.decisions.labels(call.model, call.tier, "cache").inc()
    policy = call.state.loaded.policy
    backend = policy.backends.get(call.backend)
    if backend is not None:
        _, savings = account(services.metrics, policy, backend, usage, call.team, cache_hit=True)
        _record(call, usage, 0.0, savings)
    services.limiter.settle(call.admission, 0, 0, 0.0)  # no upstream tokens, no cost


def _record(call: Call, usage: Usage, cost: float, reference: float) -> None:
    call.prompt_tokens, call.completion_tokens = usage.prompt_tokens, usage.completion_tokens
    call.cost_usd, call.reference_cost_usd = cost, reference
