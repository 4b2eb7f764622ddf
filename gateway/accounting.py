"""Tokens → cost at the policy's prices, and savings against the all-closed reference."""

from __future__ import annotations

from gateway.metrics import Metrics
from gateway.policy import Backend, Policy
from gateway.providers.base import Usage


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
