"""Slices: a process takes a small part of a team's limits from Redis in one call and admits
from it without a round trip, until it gives the rest back.

A slice is an ordinary admission in Redis, only larger: `share ÷ processes` of every window
(requests and tokens) and of every budget, counted and held at once by limits.lua's `admit`.
Whatever this process admits from it is already counted there, so slices never let a team
past a limit; what they cost is the other way: the unused part of every process's slice is
counted until it is given back. To keep that small, a slice

- is granted only while more than MARGIN (calls.py) × processes × its size is left in every
  limit (the script is asked with each limit lowered by that much), so near a limit every
  request is checked on its own again, exactly as without slices;
- is given back SLICE_S after it was taken (`unslice`, sent with the settlements, in order):
  its entry leaves the windows and its hold the budgets; what was admitted from it and is
  still in flight becomes an entry and a hold of its own, settled as any other;
- is not taken for paced rates, nor for limits too small to hold MIN_REQUESTS requests.

A request settled while its slice is out makes no call of its own: its real weights and
cost go back with the slice, summed (one window entry at the latest admission time among
them, so none leaves a window early). More in docs/reliability.md, "Slices of large limits".
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.limits.calls import (
    Admitted,
    Plan,
    Refused,
    Settlement,
    grant_template,
    plan,
    unslice_call,
)
from gateway.limits.rules import PREFIX, Rules, budget_ttl_s

SLICE_S = 1.0
MIN_REQUESTS = 8


@dataclass(slots=True)
class Slice:
    """A part of every limit of one set of rules, held by this process."""

    id: str
    rules: Rules
    keys: tuple[str, ...]
    budget_keys: tuple[str, ...]
    at_ms: int  # Redis' time at the grant
    born: float  # this process's loop time at the grant
    sizes: tuple[int, ...]
    holds: tuple[int, ...]
    left: list[int]  # per window, what is left of the slice
    room: list[int]  # per budget, nano-USD
    remaining: tuple[int, ...]  # per window, what Redis said was left beside the slice
    reset_ms: tuple[int, ...]
    budget_left: tuple[int, ...]
    # Admitted from it and not settled yet: id → (admitted at ms, weights, hold).
    open: dict[str, tuple[int, tuple[int, ...], int]] = field(default_factory=dict)
    # Settled while the slice is out, summed: per window the real weights, the latest
    # admission time among them, and the cost (every budget spends it).
    done: list[int] = field(default_factory=list)
    done_at: int = 0
    done_cost: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        self.done = [0] * len(self.sizes)


class Slicer:
    """This process's slices, one per set of rules at a time."""

    def __init__(
        self,
        share: float,
        processes: int,
        lease_ms: str,
        send: Callable[[Settlement], None],
        taken: Callable[[Slice], None],
        returned: Callable[[Slice], None],
    ) -> None:
        """`send` a return in order with the settlements; `taken` / `returned`: a slice was
        granted / given back (the local limits count it whole meanwhile)."""
        self.share, self.processes = share, max(processes, 1)
        self._lease_ms = lease_ms
        self._send, self._taken, self._returned = send, taken, returned
        self._slices: dict[int, Slice] = {}
        self._plans: dict[int, tuple[Rules, Plan | None]] = {}
        self._asking: set[int] = set()
        self._refused_until: dict[int, float] = {}
        self.closed = False  # retire_all ran: no more slices

    def plan(self, rules: Rules) -> Plan | None:
        """The rules' slice plan (worked out once per set of rules)."""
        known = self._plans.get(id(rules))
        if known is not None and known[0] is rules:
            return known[1]
        if len(self._plans) > 10_000:
            self._plans.clear()
        found = plan(rules, self.share, self.processes)
        self._plans[id(rules)] = (rules, found)
        return found

    def take(
        self,
        rules: Rules,
        aid: str,
        weights: tuple[int, ...],
        reserve: int,
        budget_keys: tuple[str, ...],
    ) -> tuple[Admitted, Slice] | None:
        """Admit from this process's slice of `rules` if it has room (no I/O)."""
        s = self._slices.get(id(rules))
        if s is None or s.rules is not rules:
            return None
        age_s = asyncio.get_running_loop().time() - s.born
        keys = s.budget_keys
        if s.closed or age_s >= SLICE_S or (keys is not budget_keys and keys != budget_keys):
            self.retire(s)
            return None
        left, room = s.left, s.room
        for weight, have in zip(weights, left, strict=True):
            if weight > have:
                return None
        for have in room:
            if reserve > have:
                return None
        left[:] = [have - weight for have, weight in zip(left, weights, strict=True)]
        if room:
            room[:] = [have - reserve for have in room]
        age = int(age_s * 1000)
        at_ms = s.at_ms + age
        s.open[aid] = (at_ms, weights, reserve)
        remaining = tuple([r + x for r, x in zip(s.remaining, left, strict=True)])
        resets = tuple([r - age if r > age else 0 for r in s.reset_ms])
        budget_left = tuple([b + x for b, x in zip(s.budget_left, room, strict=True)])
        return Admitted(at_ms, remaining, resets, budget_left, (reserve,) * len(room)), s

    async def admit(
        self,
        rules: Rules,
        aid: str,
        now: float,
        weights: tuple[int, ...],
        reserve: int,
        budget_keys: tuple[str, ...],
        ask: Callable[[Rules, str, float], Awaitable[Admitted | Refused]],
    ) -> tuple[Admitted, Slice] | None:
        """Admit from the slice of `rules`, asking Redis for a new one (by `ask`) when there is
        none with room and one is worth it (`ask`: the store's); None: no slice for this
        request."""
        taken = self.take(rules, aid, weights, reserve, budget_keys)
        if taken is not None:
            return taken
        wanted = self.wants(rules, weights, reserve)
        if wanted is None:
            return None
        sid = f"s{random.getrandbits(64):016x}"
        if await self.grant(rules, wanted, sid, now, budget_keys, ask) is None:
            return None
        return self.take(rules, aid, weights, reserve, budget_keys)

    def wants(self, rules: Rules, weights: tuple[int, ...], reserve: int) -> Plan | None:
        """The plan to ask Redis for a slice with now, or None: no plan, one asked already,
        refused less than SLICE_S ago, or a slice that would not hold MIN_REQUESTS requests
        like this one."""
        p = self.plan(rules)
        key = id(rules)
        if p is None or key in self._asking or self.closed:
            return None
        for size, weight in zip(p.sizes, weights, strict=True):
            if size < MIN_REQUESTS * weight:
                return None
        for hold in p.holds:
            if hold < MIN_REQUESTS * reserve:
                return None
        until = self._refused_until.get(key)
        if until is not None and asyncio.get_running_loop().time() < until:
            return None
        return p

    async def grant(
        self,
        rules: Rules,
        p: Plan,
        sid: str,
        now: float,
        budget_keys: tuple[str, ...],
        ask: Callable[[Rules, str, float], Awaitable[Admitted | Refused]],
    ) -> Slice | None:
        """Ask Redis for a slice (`ask` runs the call); None when Redis says no."""
        key = id(rules)
        memo = ("slice", self._lease_ms)
        template = rules.memo.get(memo)
        if template is None:
            template = rules.memo[memo] = grant_template(
                rules, self._lease_ms, p.sizes, p.holds, p.margins
            )
        ttls = [budget_ttl_s(b.period, now) for b in rules.budgets]
        self._asking.add(key)
        try:
            result = await ask(rules, template.format(0, sid, *ttls), now)
        except BaseException:  # cancelled too (the client left): Redis may run it still
            # A call that timed out here may have run in Redis all the same: give the slice
            # back, or it would stay counted for a minute and held until the lease ends.
            sizes, holds, keys = p.sizes, p.holds, rules.keys(now)
            unused = Slice(
                sid, rules, keys, budget_keys, 0, 0, sizes, holds, [*sizes], [*holds], (), (), ()
            )
            self.retire(unused)
            raise
        finally:
            self._asking.discard(key)
        loop_now = asyncio.get_running_loop().time()
        if isinstance(result, Refused):
            self._refused_until[key] = loop_now + SLICE_S
            if len(self._refused_until) > 10_000:
                self._refused_until.clear()
            return None
        old = self._slices.get(key)
        if old is not None:
            self.retire(old)
        nw = len(rules.windows)
        s = Slice(
            sid,
            rules,
            rules.keys(now),
            budget_keys,
            result.now_ms,
            loop_now,
            p.sizes,
            result.holds,
            list(p.sizes),
            list(result.holds),
            tuple(r + m for r, m in zip(result.remaining, p.margins, strict=False)),
            result.reset_ms,
            tuple(b + m for b, m in zip(result.budget_left, p.margins[nw:], strict=True)),
        )
        if self.closed:  # granted after retire_all (shutdown): back at once
            self.retire(s)
            return None
        if len(self._slices) > 10_000:
            for stale in list(self._slices.values()):
                self.retire(stale)
        self._slices[key] = s
        self._taken(s)
        asyncio.get_running_loop().call_later(SLICE_S, self.retire, s)
        return s

    def settled(self, s: Slice, aid: str, new: tuple[int, ...], cost: int) -> bool:
        """An admission from `s` is settled: True if the slice still covers it (its real
        weights and cost go to Redis with the slice), False if it was given back (settle it
        as an ordinary admission: it has an entry and a hold of its own now)."""
        if s.closed:
            return False
        admitted = s.open.pop(aid, None)
        if admitted is None:
            return False
        done = s.done
        for i, weight in enumerate(new):
            done[i] += weight
        s.done_at = max(s.done_at, admitted[0])
        s.done_cost += cost
        return True

    def retire(self, s: Slice) -> None:
        """Give the slice back (once): its unused part is free for every process again."""
        if s.closed:
            return
        s.closed = True
        if self._slices.get(id(s.rules)) is s:
            del self._slices[id(s.rules)]
        rules = s.rules
        call = unslice_call(
            rules, s.id, self._lease_ms, s.sizes, s.holds, s.done, s.done_at, s.done_cost, s.open
        )
        s.open.clear()
        self._returned(s)
        keys = (*s.keys, f"{PREFIX}:{rules.tag}:unslice:{s.id}")  # its once-only marker
        self._send(Settlement(rules.team, keys, call, s.done_cost, rules.tag, len(s.holds)))

    def retire_all(self) -> None:
        """Give every slice back (shutdown); slices granted later go back at once."""
        self.closed = True
        for s in list(self._slices.values()):
            self.retire(s)
