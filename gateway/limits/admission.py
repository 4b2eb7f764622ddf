"""What an admitted request carries to its settlement, and the refusals."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gateway.errors import BudgetExceeded, GatewayError, RateLimited
from gateway.limits.rules import Rules, WindowRule, duration, period_end
from gateway.limits.slices import Slice

NANO = 1_000_000_000  # budgets are counted in nano-USD: integers, exact in Redis and Lua


def to_nano(usd: float) -> int:
    """USD as whole nano-USD, rounded up (a reservation never falls short by rounding)."""
    return max(math.ceil(usd * NANO - 1e-6), 0)


@dataclass(slots=True)
class Admission:
    """One admitted request: what it counted where, to settle or release it later.

    `soft_exceeded` says a budget is past the team's soft share (the planner may keep the
    request on the open tier); `headers` are OpenAI's `x-ratelimit-*` for the answer.
    """

    id: str
    rules: Rules
    at_ms: int
    prompt_tokens: int
    weights: tuple[int, ...]
    window_keys: tuple[str, ...]
    budget_keys: tuple[str, ...]
    holds: tuple[int, ...]
    remaining: tuple[int, ...] = ()  # per window
    reset_ms: tuple[int, ...] = ()  # per window
    soft_exceeded: bool = False
    local: bool = False  # decided by this process alone (Redis slow or down)
    reserve: int = 0  # the estimate held (nano-USD), before any cut to what was left
    slice: Slice | None = None  # admitted from this process's slice (slices.py)
    done: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def fill_headers(self) -> None:
        """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` from the tightest window."""
        for kind in ("requests", "tokens"):
            tightest: tuple[int, int, WindowRule] | None = None
            for i, rule in enumerate(self.rules.windows):
                if rule.kind == kind and (tightest is None or self.remaining[i] < tightest[0]):
                    tightest = (self.remaining[i], self.reset_ms[i], rule)
            if tightest is not None:
                left, reset, rule = tightest
                self.headers[f"x-ratelimit-limit-{kind}"] = str(rule.limit)
                self.headers[f"x-ratelimit-remaining-{kind}"] = str(max(left, 0))
                self.headers[f"x-ratelimit-reset-{kind}"] = duration(reset / 1000)


def rate_limited(rules: Rules, index: int, retry_ms: int) -> RateLimited:
    """The 429 for window `index`; `retry_ms` < 0: the request alone is over the limit."""
    rule = rules.windows[index]
    who = f"Team {rules.team!r}" if rule.scope == "team" else "This API key"
    unit = "requests" if rule.kind == "requests" else "tokens"
    wait = rule.window_ms if retry_ms < 0 else retry_ms
    headers = {
        "retry-after": str(max(math.ceil(wait / 1000), 1)),
        f"x-ratelimit-limit-{unit}": str(rule.limit),
        f"x-ratelimit-remaining-{unit}": "0",
        f"x-ratelimit-reset-{unit}": duration(wait / 1000),
    }
    if retry_ms < 0:
        message = (
            f"Request too large: {who} may use {rule.limit} {unit} per minute, "
            "and this request alone needs more."
        )
    else:
        message = f"{who} is over its limit of {rule.limit} {unit} per minute."
    return RateLimited(message, headers=headers)


def budget_exceeded(rules: Rules, index: int, retry_s: float) -> BudgetExceeded:
    """The 429 for budget `index`, retryable once the period ends (or holds are settled)."""
    rule = rules.budgets[index]
    who = f"Team {rules.team!r}" if rule.scope == "team" else "This API key"
    return BudgetExceeded(
        f"{who} has used its {'daily' if rule.period == 'day' else 'monthly'} budget of "
        f"${rule.limit_usd:g}.",
        headers={"retry-after": str(max(math.ceil(retry_s), 1))},
    )


def refusal(rules: Rules, budget: bool, index: int, retry_ms: int, now: float) -> GatewayError:
    """The error for a refusal by window or budget `index` (see store.Refused)."""
    if not budget:
        return rate_limited(rules, index, retry_ms)
    period = rules.budgets[index].period
    # Used up: until the period ends; only held by requests in flight: soon.
    retry = period_end(period, now) - now if retry_ms == 1 else 1.0
    return budget_exceeded(rules, index, retry)
