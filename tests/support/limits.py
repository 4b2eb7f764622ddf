"""Helpers for the limiter tests: tenants with limits, a clock the test moves."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from gateway.auth import Tenant
from gateway.policy import Limits

_SEQ = itertools.count()

# 2023-11-14 22:13:50 UTC: the middle of a minute, far from a day's end.
T0 = 1_700_000_030.5


@dataclass
class Clock:
    """A clock the test sets and moves; the limiter reads it on every call."""

    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def tenant(key_limits: Limits | None = None, key: str = "k1", **limits: object) -> Tenant:
    """A tenant of a fresh team (its own Redis keys) with the given team limits."""
    team = f"team-{next(_SEQ)}"
    team_limits = Limits.model_validate(limits) if limits else None
    return Tenant(team, "team:" + team, None, team_limits, key, key_limits)


def same_team(other: Tenant, key: str, key_limits: Limits | None = None) -> Tenant:
    """Another key of `other`'s team."""
    return Tenant(other.team, other.partition, None, other.limits, key, key_limits)
