"""Routing policies: schema, loading and validation."""

from gateway.policy.loader import LoadedPolicy, load_policy, parse_policy
from gateway.policy.problems import PolicyInvalid, Problem
from gateway.policy.schema import (
    Backend,
    CachePolicy,
    Condition,
    ModelRoute,
    Policy,
    Price,
    Router,
    Rule,
    Shadow,
    Tier,
)
from gateway.policy.teams import Limits, Team

__all__ = [
    "Backend",
    "CachePolicy",
    "Condition",
    "Limits",
    "LoadedPolicy",
    "ModelRoute",
    "Policy",
    "PolicyInvalid",
    "Price",
    "Problem",
    "Router",
    "Rule",
    "Shadow",
    "Team",
    "Tier",
    "load_policy",
    "parse_policy",
]
