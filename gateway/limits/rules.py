"""Which limits apply to a tenant, the Redis keys that hold them, and their periods.

Every key of one team carries the hash tag `{team}`, so one script touches one cluster slot.
"""

from __future__ import annotations

import calendar
import time
import zlib
from dataclasses import dataclass, field
from typing import Literal

from gateway.auth import Tenant
from gateway.policy import Limits

PREFIX = "gateway:limits:v2"
WINDOW_MS = 60_000
# Budget keys outlive their period a little, so a late settlement still finds them.
_GRACE_S = 2 * 86_400

Kind = Literal["requests", "tokens"]
Period = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class WindowRule:
    """At most `limit` requests (or tokens) in any sliding window of `window_ms`; or, with a
    `burst`, paced (GCRA): at most `burst` at once, then one every `window_ms / limit`."""

    scope: str  # "team" or "key:<key id>"
    kind: Kind
    limit: int
    window_ms: int = WINDOW_MS
    burst: int = 0  # 0: a sliding window

    @property
    def interval_ms(self) -> float:
        """A paced rule's spacing: the window over the limit."""
        return self.window_ms / self.limit


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """At most `limit_usd` per UTC day or month."""

    scope: str
    period: Period
    limit_usd: float


@dataclass(frozen=True, slots=True)
class Rules:
    """Every limit that applies to one tenant. Its keys are worked out once (per UTC day for
    budgets); `memo` keeps what other parts derive from it once (the store's command
    templates)."""

    team: str
    tag: str  # the hash tag, `{...}` included
    windows: tuple[WindowRule, ...]
    budgets: tuple[BudgetRule, ...]
    fail: Literal["open", "closed"] = "open"
    soft_share: float | None = None
    _window_keys: tuple[str, ...] = field(init=False, compare=False, repr=False)
    # By UTC day number: the budget keys, and every key (the windows' first).
    _by_day: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = field(
        init=False, compare=False, repr=False
    )
    memo: dict[object, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        keys: list[str] = []
        for w in self.windows:
            base = f"{PREFIX}:{self.tag}:{w.scope}:{w.kind}"
            keys += [base + ":g"] * 2 if w.burst else [base + ":z", base + ":n"]
        object.__setattr__(self, "_window_keys", tuple(keys))
        object.__setattr__(self, "_by_day", {})
        object.__setattr__(self, "memo", {})

    @property
    def empty(self) -> bool:
        """True when nothing limits this tenant."""
        return not self.windows and not self.budgets

    def window_keys(self) -> tuple[str, ...]:
        """The sorted set and running sum of each window, in rule order (a paced rule's one
        key, its theoretical arrival time, twice)."""
        return self._window_keys

    def budget_keys(self, now: float) -> tuple[str, ...]:
        """The totals hash and the holds set of each budget for the period around `now`."""
        return self._day(now)[0]

    def keys(self, now: float) -> tuple[str, ...]:
        """The window keys, then the budget keys for the period around `now`."""
        return self._day(now)[1]

    def _day(self, now: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
        day = int(now // 86_400)
        keys = self._by_day.get(day)
        if keys is None:
            found: list[str] = []
            for b in self.budgets:
                base = f"{PREFIX}:{self.tag}:{b.scope}:usd:{period_id(b.period, now)}"
                found += [base + ":h", base + ":r"]
            if len(self._by_day) > 2:
                self._by_day.clear()
            keys = self._by_day[day] = (tuple(found), self._window_keys + tuple(found))
        return keys


def _tag(team: str) -> str:
    # A brace inside the name would end the tag early; such names use their hash instead.
    if "{" in team or "}" in team or not team:
        return "{t%08x}" % zlib.crc32(team.encode())  # noqa: UP031
    return "{" + team + "}"


def _from_limits(scope: str, limits: Limits | None) -> tuple[list[WindowRule], list[BudgetRule]]:
    if limits is None:
        return [], []
    windows = []
    if limits.requests_per_minute is not None:
        burst = limits.requests_burst or 0
        windows.append(WindowRule(scope, "requests", limits.requests_per_minute, burst=burst))
    if limits.tokens_per_minute is not None:
        windows.append(WindowRule(scope, "tokens", limits.tokens_per_minute))
    budgets = []
    if limits.budget_usd_per_day is not None:
        budgets.append(BudgetRule(scope, "day", limits.budget_usd_per_day))
    if limits.budget_usd_per_month is not None:
        budgets.append(BudgetRule(scope, "month", limits.budget_usd_per_month))
    return windows, budgets


def rules_for(tenant: Tenant) -> Rules:
    """The limits of a tenant: its team's, then its key's own."""
    team_w, team_b = _from_limits("team", tenant.limits)
    key_w, key_b = _from_limits(
        f"key:{tenant.key_id}", tenant.key_limits if tenant.key_id else None
    )
    team = tenant.limits
    return Rules(
        tenant.team,
        _tag(tenant.team),
        tuple(team_w + key_w),
        tuple(team_b + key_b),
        team.fail if team is not None else "open",
        team.soft_budget_share if team is not None else None,
    )


class RulesByTenant:
    """The limits of each tenant, worked out once per tenant object."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[Tenant, Rules]] = {}

    def __call__(self, tenant: Tenant) -> Rules:
        known = self._known.get(id(tenant))
        if known is not None and known[0] is tenant:
            return known[1]
        if len(self._known) > 10_000:
            self._known.clear()
        rules = rules_for(tenant)
        self._known[id(tenant)] = (tenant, rules)
        return rules


def period_id(period: Period, now: float) -> str:
    """`d20260509` for a UTC day, `m202605` for a UTC month."""
    t = time.gmtime(now)
    return (
        f"d{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}"
        if period == "day"
        else (f"m{t.tm_year:04d}{t.tm_mon:02d}")
    )


_month_ends: dict[int, float] = {}  # by UTC day number


def period_end(period: Period, now: float) -> float:
    """When the UTC day or month around `now` ends (epoch seconds; a UTC day is 86,400 of
    them)."""
    day = int(now // 86_400)
    if period == "day":
        return (day + 1) * 86_400.0
    end = _month_ends.get(day)
    if end is None:
        t = time.gmtime(day * 86_400)
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        end = float(calendar.timegm((year, month, 1, 0, 0, 0)))
        if len(_month_ends) > 2:
            _month_ends.clear()
        _month_ends[day] = end
    return end


def budget_ttl_s(period: Period, now: float) -> int:
    """How long a budget key is kept: to its period's end, plus some grace."""
    return int(period_end(period, now) - now) + _GRACE_S


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s"
