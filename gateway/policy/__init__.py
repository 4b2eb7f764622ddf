"""Routing policies: schema, loading and validation."""

from gateway.policy.loader import LoadedPolicy, load_policy, parse_policy
from gateway.policy.problems import PolicyInvalid, Problem
from gateway.policy.schema import (
    Backend,
    CachePolicy,
    Condition,
    Endpoint,
    Limits,
    ModelRoute,
    Policy,
    Price,
    Rule,
    Team,
    Tier,
)

__all__ = [
    "Backend",
    "CachePolicy",
    "Condition",
    "Endpoint",
    "Limits",
    "LoadedPolicy",
    "ModelRoute",
    "Policy",
    "PolicyInvalid",
    "Price",
    "Problem",
    "Rule",
    "Team",
    "Tier",
    "load_policy",
    "parse_policy",
]
