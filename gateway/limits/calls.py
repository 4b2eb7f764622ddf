"""What the store asks limits.lua and what it answers: the replies as data, the call
templates worked out once per set of rules, and settlements as replayable calls."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.limits.rules import Rules, budget_ttl_s

# A slice (slices.py) is granted only while more than MARGIN x processes x its size is left.
MARGIN = 4


@dataclass(frozen=True, slots=True)
class Admitted:
    """The script said yes: the time it used, and what is left in each window and budget."""

    now_ms: int
    remaining: tuple[int, ...]
    reset_ms: tuple[int, ...]
    budget_left: tuple[int, ...]  # nano-USD, after this request's hold
    holds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """The script said no: which window (`budget` False) or budget, and a retry hint."""

    now_ms: int
    budget: bool
    index: int
    retry_ms: int  # windows: ms until it fits (-1 never); budgets: 1 when spent is at limit


@dataclass(frozen=True, slots=True)
class Settlement:
    """One settlement or release, as replayable data: its keys and its call (limits.lua)."""

    team: str
    keys: tuple[str, ...]
    call: str
    cost_nano: int
    tag: str = ""  # the team's hash tag: calls with the same one may share a batch
    budgets: int = 0  # how many budgets: their keys come last


def admit_template(rules: Rules, lease_ms: str) -> str:
    """An admission's call, its constants filled in; `{}`: now, id, each window's weight,
    each budget's reserve and TTL."""
    parts = ["admit", "{}", "{}", str(len(rules.windows)), str(len(rules.budgets)), lease_ms]
    for rule in rules.windows:
        parts += [str(rule.limit), str(rule.window_ms), "{}", str(rule.burst)]
    for budget in rules.budgets:
        parts += [str(int(budget.limit_usd * 1e9)), "{}", "{}"]
    return " ".join(parts)


def _settle_template(rules: Rules, local: bool) -> str:
    """A settlement's call, its constants filled in; `{}`: now, id, per window the old and
    new weight and the admission time, per budget the hold, the cost and the TTL."""
    parts = ["settle", "{}", "{}", str(len(rules.windows)), str(len(rules.budgets)), "0"]
    for rule in rules.windows:
        pace = (f"{rule.interval_ms:.3f}" if local else "-1") if rule.burst else "0"
        parts += [str(rule.window_ms), "{}", "{}", "{}", pace]
    parts += ["{} {} {}"] * len(rules.budgets)
    return " ".join(parts)


def settlement(
    rules: Rules,
    admission_id: str,
    window_keys: tuple[str, ...],
    budget_keys: tuple[str, ...],
    at_ms: int,
    old: tuple[int, ...],
    new: tuple[int, ...],
    holds: tuple[int, ...],
    cost_nano: int,
    now: float,
    now_ms: int,
    local: bool = False,
) -> Settlement:
    """The script call that replaces estimates by real counts and holds by spend.

    `now_ms` 0 lets Redis use its own clock; `local`: this process decided the admission
    alone, so a paced rate has yet to count it.
    """
    template = rules.memo.get(("settle", local))
    if template is None:
        template = rules.memo[("settle", local)] = _settle_template(rules, local)
    values: list[object] = [now_ms, admission_id]
    for o, n in zip(old, new, strict=True):
        values += (o, n, at_ms)
    for budget, hold in zip(rules.budgets, holds, strict=True):
        values += (hold, cost_nano, budget_ttl_s(budget.period, now))
    keys = window_keys + budget_keys
    return Settlement(
        rules.team, keys, template.format(*values), cost_nano, rules.tag, len(rules.budgets)
    )


def grant_template(
    rules: Rules,
    lease_ms: str,
    sizes: tuple[int, ...],
    holds: tuple[int, ...],
    margins: tuple[int, ...],
) -> str:
    """The admission call of a slice (slices.py): every limit lowered by its margin; `{}`:
    now, id, and per budget its TTL."""
    nw = len(rules.windows)
    parts = ["admit", "{}", "{}", str(nw), str(len(rules.budgets)), lease_ms]
    for rule, size, margin in zip(rules.windows, sizes, margins, strict=False):
        parts += [str(rule.limit - margin), str(rule.window_ms), str(size), "0"]
    for budget, hold, margin in zip(rules.budgets, holds, margins[nw:], strict=True):
        parts += [str(int(budget.limit_usd * 1e9) - margin), str(hold), "{}"]
    return " ".join(parts)


def unslice_call(
    rules: Rules,
    slice_id: str,
    lease_ms: str,
    sizes: tuple[int, ...],
    holds: tuple[int, ...],
    done: list[int],
    done_at: int,
    done_cost: int,
    in_flight: dict[str, tuple[int, tuple[int, ...], int]],
) -> str:
    """A slice's return (limits.lua, `unslice`): per window its size and what was settled from
    it, per budget its hold and the cost settled, then the admissions still in flight (id →
    admitted at ms, weights, hold), which get entries and holds of their own."""
    parts = ["unslice", "0", slice_id, str(len(rules.windows)), str(len(rules.budgets)), lease_ms]
    for rule, size, weight in zip(rules.windows, sizes, done, strict=True):
        parts += [str(size), str(rule.window_ms), str(weight), str(done_at)]
    for hold in holds:
        parts += [str(hold), str(done_cost)]
    parts.append(str(len(in_flight)))
    for aid, (at_ms, weights, hold) in in_flight.items():
        parts += [aid, str(at_ms), *map(str, weights), *[str(hold)] * len(holds)]
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Plan:
    """How large a slice of a set of rules is, and the limits a slice is asked against."""

    sizes: tuple[int, ...]  # per window
    holds: tuple[int, ...]  # per budget, nano-USD
    margins: tuple[int, ...]  # per window, then per budget


def plan(rules: Rules, share: float, processes: int) -> Plan | None:
    """The slice of `rules` for one of `processes`, or None when there is none to take."""
    if share <= 0 or rules.empty or any(w.burst for w in rules.windows):
        return None
    sizes, margins = [], []
    for w in rules.windows:
        size = int(w.limit * share / processes)
        if size < 1 or w.limit - MARGIN * processes * size <= size:
            return None
        sizes.append(size)
        margins.append(MARGIN * processes * size)
    holds = []
    for b in rules.budgets:
        hold = int(b.limit_usd * 1e9 * share / processes)
        if hold < 1 or int(b.limit_usd * 1e9) - MARGIN * processes * hold <= hold:
            return None
        holds.append(hold)
        margins.append(MARGIN * processes * hold)
    return Plan(tuple(sizes), tuple(holds), tuple(margins))
