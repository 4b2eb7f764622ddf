"""Tokenizer-free estimates: what a request may cost before it is sent, and what an answer
without `usage` used.

A token is taken as 4 bytes of UTF-8 JSON. For English text that is close to what the common
tokenizers give; counting the JSON framing too errs toward charging more, never less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.policy import Policy, Price
from gateway.wire import Endpoint, Usage

BYTES_PER_TOKEN = 4
# Output held for a request that sets no max_tokens, and the most any request holds.
DEFAULT_OUTPUT_TOKENS = 512
MAX_OUTPUT_TOKENS = 4096


def tokens_in(size_bytes: int) -> int:
    """Tokens in `size_bytes` bytes of text or JSON (at least 1)."""
    return max(size_bytes // BYTES_PER_TOKEN, 1)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Before the call: the prompt's tokens and the most it is expected to cost."""

    prompt_tokens: int
    output_tokens: int
    reserve_usd: float


def _output_tokens(body: dict[str, Any], endpoint: Endpoint) -> int:
    if endpoint == "embeddings":
        return 0
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    per_choice = asked if isinstance(asked, int) and asked > 0 else DEFAULT_OUTPUT_TOKENS
    n = body.get("n")
    choices = n if isinstance(n, int) and n > 0 else 1
    return min(per_choice * choices, MAX_OUTPUT_TOKENS)


def route_prices(policy: Policy) -> dict[str, tuple[Price, ...]]:
    """Per model: the prices of the backends its route may use that can be the dearest for
    some request (a price no higher than another's in both input and output is dropped).

    Built once per policy (`PolicyState`), so a reservation prices one or two backends.
    """
    out: dict[str, tuple[Price, ...]] = {}
    for model, route in policy.models.items():
        names = dict.fromkeys(name for rule in route.rules for name in rule.to)
        prices = [policy.backends[n].price for n in names if n in policy.backends]
        kept: list[Price] = []
        for p in sorted(prices, key=lambda p: (-p.input_per_mtok, -p.output_per_mtok)):
            if not any(k.output_per_mtok >= p.output_per_mtok for k in kept):
                kept.append(p)  # dearer output than every price with a dearer input
        out[model] = tuple(kept)
    return out


def estimate(
    prices: tuple[Price, ...], endpoint: Endpoint, body: dict[str, Any], body_bytes: int
) -> Estimate:
    """Prompt tokens from the body's size; cost at the dearest of `prices` (the route's, from
    `route_prices`)."""
    prompt = tokens_in(body_bytes)
    output = _output_tokens(body, endpoint)
    cost = max((p.cost(prompt, output) for p in prices), default=0.0)
    return Estimate(prompt, output, cost)


def filled(usage: Usage, prompt_estimate: int, answer_bytes: int) -> Usage:
    """`usage` when the backend reported any; else an estimate to charge instead of nothing.

    `answer_bytes`: the size of the answer as sent (JSON or SSE); 0 for embeddings.
    """
    if usage.prompt_tokens or usage.completion_tokens:
        return usage
    return Usage(prompt_estimate, tokens_in(answer_bytes) if answer_bytes else 0)
