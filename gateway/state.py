"""The policy a worker serves and everything derived from it: built whole, never changed.

A request keeps the `PolicyState` it started with, so a reload mid-request changes nothing
for it; `gateway.reload` builds the next one and swaps it in with one assignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.auth import KeyRing
from gateway.difficulty import ShareCalibrator
from gateway.limits.estimate import route_prices
from gateway.policy import CachePolicy, LoadedPolicy, Price


@dataclass(frozen=True)
class PolicyState:
    """A loaded policy and everything derived from it; never changed, only replaced."""

    loaded: LoadedPolicy
    keys: KeyRing
    calibrators: dict[tuple[str, int], ShareCalibrator] = field(default_factory=dict)
    # Cache settings per model: the policy-wide ones overridden by the model's own.
    cache: dict[str, CachePolicy] = field(default_factory=dict)
    # Teams whose data must stay on self-hosted models, and teams that opted in to prompt
    # retention (labels, feedback).
    self_hosted: frozenset[str] = frozenset()
    retaining: frozenset[str] = frozenset()
    # Per model: the prices a budget reservation is taken at (limits.estimate.route_prices).
    prices: dict[str, tuple[Price, ...]] = field(default_factory=dict)

    def retains(self, team: str) -> bool:
        """Whether a team's requests are kept for feedback."""
        return team in self.retaining

    @classmethod
    def build(
        cls,
        loaded: LoadedPolicy,
        prior: list[float] | None = None,
        previous: PolicyState | None = None,
    ) -> PolicyState:
        """Derive key lookups and calibrators; keep calibrators whose target did not change.

        `prior` is the training score distribution: until enough traffic has been seen, the
        calibrated threshold leans on it instead of on a handful of requests.
        """
        old = previous.calibrators if previous is not None else {}
        calibrators: dict[tuple[str, int], ShareCalibrator] = {}
        for model, route in loaded.policy.models.items():
            for i, rule in enumerate(route.rules):
                share = rule.when.closed_share if rule.when is not None else None
                if share is None:
                    continue
                kept = old.get((model, i))
                calibrators[(model, i)] = (
                    kept
                    if kept is not None and kept.target_share == share
                    else ShareCalibrator(share, prior=prior)
                )
        policy = loaded.policy
        cache = {}
        for model, route in policy.models.items():
            merged = policy.cache.model_dump(exclude_none=True)
            if route.cache is not None:
                merged.update(route.cache.model_dump(exclude_none=True))
            cache[model] = CachePolicy(**merged)
        teams = policy.teams.items()
        self_hosted = frozenset(n for n, t in teams if t.data_residency == "self_hosted")
        retaining = frozenset(n for n, t in teams if t.retain_prompts and n not in self_hosted)
        # The same secret and API keys as before; policy keys from the new policy.
        keys = previous.keys.for_policy(policy) if previous is not None else KeyRing(policy)
        prices = route_prices(policy)
        return cls(loaded, keys, calibrators, cache, self_hosted, retaining, prices)
