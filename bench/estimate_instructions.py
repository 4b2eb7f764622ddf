"""Instructions one budget reservation estimate costs, before and after prices were cached.

    valgrind --tool=callgrind --callgrind-out-file=OUT python bench/estimate_instructions.py \\
        MODE POLICY N        # MODE old|new, POLICY features|limits (bench/policies/), N calls

Run each (MODE, POLICY) with N = 1000 and N = 6000 (`PYTHONHASHSEED=0 PYTHONMALLOC=malloc`)
and take (I(6000) - I(1000)) / 5000: the instructions per request, start-up excluded, as
bench/instructions.py does for a whole request. `old` is the estimate as it was before
`PolicyState.prices` (kept here, verbatim, for the comparison: every request walked the
route's rules and priced each backend); `new` is what the pipeline does now (the tenant's
rules, then the cached prices only when a budget applies). `features` has no budget,
`limits` has one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from gateway.auth import KeyRing
from gateway.limits import Limiter, estimate
from gateway.limits.estimate import Estimate, _output_tokens, route_prices, tokens_in
from gateway.metrics import Metrics
from gateway.policy import Policy, parse_policy
from gateway.wire import Endpoint

BODY = {"model": "m", "messages": [{"role": "user", "content": "x" * 900}], "temperature": 0.2}
POLICIES = Path(__file__).resolve().parent / "policies"


def old_estimate(
    policy: Policy, model: str, endpoint: Endpoint, body: dict[str, Any], body_bytes: int
) -> Estimate:
    """The estimate before prices were cached (as at 4eeb954)."""
    prompt = tokens_in(body_bytes)
    output = _output_tokens(body, endpoint)
    route = policy.models.get(model)
    names = {name for rule in route.rules for name in rule.to} if route is not None else set()
    prices = [policy.backends[n].price for n in names if n in policy.backends]
    cost = max((p.cost(prompt, output) for p in prices), default=0.0)
    return Estimate(prompt, output, cost)


def main() -> None:
    """Run N estimates the old or the new way."""
    mode, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.environ.setdefault("UPSTREAM_BASE_URL", "http://127.0.0.1:1/v1")
    key = os.environ.setdefault("BENCH_TEAM_KEY", "sk-bench-team-key")
    path = POLICIES / f"{name}.yaml"
    policy = parse_policy(path.read_text(), str(path)).policy
    tenant = KeyRing(policy).authenticate("Bearer " + key)
    limiter = Limiter(None, Metrics())
    prices = route_prices(policy)
    limiter.rules(tenant)
    if mode == "old":
        for _ in range(n):
            old_estimate(policy, "*", "chat", BODY, 1000)
    else:
        for _ in range(n):
            if limiter.rules(tenant).budgets:
                estimate(prices.get("*", ()), "chat", BODY, 1000)


if __name__ == "__main__":
    main()
