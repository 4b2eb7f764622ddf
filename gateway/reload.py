"""The policy a worker serves, and how it is replaced: built whole, swapped in one assignment.

A request keeps the `PolicyState` it started with, so a reload mid-request changes nothing
for it. A file that fails to load leaves the old state serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.auth import KeyRing
from gateway.difficulty import ShareCalibrator
from gateway.errors import PolicyError
from gateway.policy import CachePolicy, LoadedPolicy, load_policy

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.reload")


@dataclass(frozen=True)
class PolicyState:
    """A loaded policy and everything derived from it; never changed, only replaced."""

    loaded: LoadedPolicy
    keys: KeyRing
    calibrators: dict[tuple[str, int], ShareCalibrator] = field(default_factory=dict)
    # Cache settings per model: the policy-wide ones overridden by the model's own.
    cache: dict[str, CachePolicy] = field(default_factory=dict)

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
        return cls(loaded, KeyRing(policy), calibrators, cache)


def reload(services: Services, path: Path | None = None) -> None:
    """Load the policy again and swap it in; a bad file keeps the old policy serving."""
    path = path or services.settings.policy
    try:
        loaded = load_policy(path)
    except PolicyError as exc:
        services.metrics.policy_reloads.labels("error").inc()
        log.error("policy reload failed; keeping the old policy", extra={"error": str(exc)})
        raise
    prior = services.classifier.artifact.score_prior.tolist()
    services.state = PolicyState.build(loaded, prior, services.state)
    services.metrics.policy_reloads.labels("ok").inc()
    services.publish_info()
    log.info("policy reloaded", extra={"policy_version": loaded.version})


async def watch(services: Services) -> None:
    """Reload when the policy file's mtime changes (a bad file is not retried until then)."""
    path = services.settings.policy
    seen = services.state.loaded.mtime
    while True:
        await asyncio.sleep(services.settings.policy_reload_s)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if mtime == seen:
            continue
        seen = mtime
        # A bad file is logged and counted by reload; the old policy keeps serving.
        with contextlib.suppress(PolicyError):
            reload(services, path)
