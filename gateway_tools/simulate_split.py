"""A/B splits in `gateway policy simulate`: replayed by their weights.

Decision records do not carry the user a split is sticky to, so each record gets a fixed
pseudo-random draw and the split's backends take their weight's share of the records.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gateway.breakers import Breakers
from gateway.errors import UpstreamUnavailable
from gateway.planning import choose_rule, make_plan
from gateway.policy import Policy
from gateway.wire import Endpoint
from gateway_tools.replay_log import NO_BACKEND, FloatArray


def first_target(
    policy: Policy,
    key: str,
    endpoint: Endpoint,
    score: float | None,
    threshold: Callable[[int], float],
    sticky: float = 0.0,
) -> str:
    """The backend the server's planner puts first (all healthy)."""
    try:
        plan = make_plan(
            policy, key, policy.models[key], endpoint, score, threshold, Breakers(), sticky=sticky
        )
    except UpstreamUnavailable:
        return NO_BACKEND
    return plan.targets[0].name


def draws(n: int) -> FloatArray:
    """A fixed pseudo-random draw in [0, 1) per record, for A/B splits: decision records do
    not carry the user, so a split is replayed by its weights rather than per user."""
    index = np.arange(n, dtype=np.uint64)
    return ((index * np.uint64(2654435761)) % np.uint64(2**32)).astype(np.float64) / 2**32


def split_bands(
    policy: Policy, key: str, endpoint: Endpoint, cut: float, threshold: Callable[[int], float]
) -> tuple[FloatArray, list[str]] | None:
    """For a cut whose rule is a split: band edges in [0, 1) and the first target per band."""
    route = policy.models[key]
    index, _ = choose_rule(route, cut, threshold)
    rule = route.rules[index]
    if rule.split is None:
        return None
    weights = np.array(list(rule.split.values()), np.float64)
    edges = np.cumsum(weights) / weights.sum()
    mids = (np.concatenate([[0.0], edges[:-1]]) + edges) / 2
    targets = [first_target(policy, key, endpoint, cut, threshold, float(m)) for m in mids]
    return edges[:-1], targets
