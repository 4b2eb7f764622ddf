"""Policy file schema, the tenants' part: teams, their keys and limits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """A policy section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(Strict):
    """Per-team (or per-key) limits, enforced across replicas through Redis (gateway/limits).

    Windows slide over the last 60 s; budgets are calendar periods in UTC.
    """

    requests_per_minute: int | None = Field(None, ge=1)
    # Set: requests are paced (GCRA) instead of counted in a sliding window: at most this
    # many at once, then one every 60 s / requests_per_minute. Any 60 s then holds at most
    # requests_per_minute + requests_burst, and a team kept busy gets its rate in every 60 s.
    requests_burst: int | None = Field(None, ge=1)
    budget_usd_per_day: float | None = Field(None, gt=0)
    # Prompt plus completion tokens; the prompt is estimated at admission, settled after.
    tokens_per_minute: int | None = Field(None, ge=1)
    budget_usd_per_month: float | None = Field(None, gt=0)
    # Share of a budget past which admissions say `soft_exceeded` (the planner then keeps
    # the team on the open tier while it has a target). Team limits only.
    soft_budget_share: float | None = Field(None, gt=0, lt=1)
    # When Redis is slow or down: "open" enforces each replica's share of the limits locally,
    # "closed" refuses the team's requests (503). Team limits only.
    fail: Literal["open", "closed"] = "open"

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> Limits:
        if self.requests_burst is not None:
            if self.requests_per_minute is None:
                raise ValueError("requests_burst paces requests_per_minute, which is not set")
            if self.requests_burst > self.requests_per_minute:
                raise ValueError("requests_burst cannot exceed requests_per_minute")
        return self


class Team(Strict):
    """A tenant: its API keys and what it may use."""

    # Keys declared here; more can be made through /admin/keys (a team may have none here).
    keys: list[str] = Field([], repr=False)
    allowed_models: list[str] | None = None
    limits: Limits | None = None
    # self_hosted: never routed to, shadowed on, or judged by a closed-tier backend.
    data_residency: Literal["any", "self_hosted"] = "any"
    # Opt-in: the team's prompts may be kept in label records (shadow labels, feedback).
    retain_prompts: bool = False
    # Tools whose calls have side effects: requests offering them are never shadowed.
    side_effect_tools: list[str] = []
    # The same kinds of limits, applied to each of the team's keys on its own.
    key_limits: Limits | None = None


__all__ = ["Limits", "Team"]
