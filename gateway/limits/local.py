"""The same limits in one process: without Redis, and as each process's share while Redis is
slow or down.

Every admission of this process is mirrored here, however it was decided (a slice as one
admission of its whole size, set to what was used when it goes back), so the local share
(limit ÷ processes) counts what the process already let through when it has to decide alone.
A budget's local allowance is what Redis last said was left, divided the same way.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from gateway.limits.calls import Admitted, Refused
from gateway.limits.rules import Rules, WindowRule
from gateway.limits.slices import Slice

_MAX_STATES = 10_000


def _pace(
    tat: float, weight: int, burst: int, interval: float, now: int
) -> tuple[float | None, int]:
    """GCRA as limits.lua's `pace`: the new arrival time if `weight` fits now, else None and
    the ms until it would (-1: never)."""
    if weight > burst:
        return None, -1
    due = max(tat, now) + weight * interval
    early = due - now - burst * interval
    if early > 1e-6:
        return None, max(math.ceil(early), 1)
    return due, 0


@dataclass(slots=True)
class _Window:
    entries: deque[list[int | str]] = field(default_factory=deque)  # [at_ms, id, weight]
    by_id: dict[str, list[int | str]] = field(default_factory=dict)
    total: int = 0
    # Since Redis last decided here: what it said was left in the whole window (None: it
    # never did), what of this process's own has left the window since, and what this
    # process admitted alone since.
    seen_left: int | None = None
    freed: int = 0
    alone: int = 0
    tat: float = 0.0  # a paced rate: when the next request is due (ms)

    def purge(self, cutoff: int) -> None:
        while self.entries and int(self.entries[0][0]) <= cutoff:
            _, key, weight = self.entries.popleft()
            self.by_id.pop(str(key), None)
            self.total -= int(weight)
            self.freed += int(weight)

    def room(self, limit: int, divisor: int) -> int:
        """What this process may still admit alone in this window.

        Its share (limit ÷ processes) less what it let through itself; and, once Redis has
        decided for it, no more than its part of what Redis said was left plus what of its
        own has left the window since. Summed over the processes that is what was left plus
        everything that has left: the whole window stays within the limit however unevenly
        Redis' admissions were spread over the processes.
        """
        room = max(limit // divisor, 1) - self.total
        if self.seen_left is not None:
            room = min(room, self.seen_left // divisor + self.freed - self.alone)
        return room


@dataclass(slots=True)
class _Budget:
    spent: int = 0  # spend decided here and not yet replayed to Redis (nano-USD)
    holds: dict[str, int] = field(default_factory=dict)
    held: int = 0


class LocalLimits:
    """In-process sliding windows and budgets, each limit divided by `divisor`."""

    def __init__(self, divisor: int) -> None:
        self.divisor = max(divisor, 1)
        self._windows: dict[str, _Window] = {}
        self._budgets: dict[str, _Budget] = {}
        # What Redis last said was left in each budget (nano-USD), by totals key.
        self.seen_left: dict[str, int] = {}

    def _window(self, key: str) -> _Window:
        w = self._windows.get(key)
        if w is None:
            if len(self._windows) > _MAX_STATES:
                self._windows.clear()
            w = self._windows[key] = _Window()
        return w

    def _budget(self, key: str) -> _Budget:
        b = self._budgets.get(key)
        if b is None:
            if len(self._budgets) > _MAX_STATES:
                self._budgets = {k: v for k, v in self._budgets.items() if v.holds}
            b = self._budgets[key] = _Budget()
        return b

    def share(self, limit: int) -> int:
        """This process's part of a limit (at least 1)."""
        return max(limit // self.divisor, 1)

    def admit(
        self,
        rules: Rules,
        admission_id: str,
        now_ms: int,
        weights: tuple[int, ...],
        reserve_nano: int,
        budget_keys: tuple[str, ...],
    ) -> Admitted | Refused:
        """Decide alone with this process's share of each limit; count and hold if all fit."""
        window_keys = rules.window_keys()
        windows = []
        tats: dict[int, float] = {}
        for i, (rule, weight) in enumerate(zip(rules.windows, weights, strict=True)):
            w = self._window(window_keys[2 * i])
            limit = self.share(rule.limit)
            if rule.burst:
                tat, wait = _pace(w.tat, weight, self._burst(rule), self._interval(rule), now_ms)
                if tat is None:
                    return Refused(now_ms, False, i, wait)
                tats[i] = tat
                windows.append(w)
                continue
            w.purge(now_ms - rule.window_ms)
            if weight > w.room(rule.limit, self.divisor):
                return Refused(
                    now_ms, False, i, self._retry_ms(w, weight, limit, rule.window_ms, now_ms)
                )
            windows.append(w)
        free = []
        for j, budget in enumerate(rules.budgets):
            key = budget_keys[2 * j]
            b = self._budget(key)
            limit = int(budget.limit_usd * 1e9)
            allowance = self.seen_left.get(key, limit) // self.divisor
            if b.spent + b.held >= allowance:
                return Refused(now_ms, True, j, 1 if b.spent >= allowance else 0)
            room = allowance - b.spent - b.held
            if room < reserve_nano and b.held > 0:  # only a request alone may hold short
                return Refused(now_ms, True, j, 0)
            free.append(room)
        remaining, resets = [], []
        for i, (w, rule, weight) in enumerate(zip(windows, rules.windows, weights, strict=True)):
            if i in tats:
                w.tat, ahead = tats[i], tats[i] - now_ms
                remaining.append(
                    math.floor(self._burst(rule) - ahead / self._interval(rule) + 1e-6)
                )
                resets.append(math.ceil(ahead))
                continue
            self._add(w, admission_id, now_ms, weight)
            w.alone += weight
            remaining.append(w.room(rule.limit, self.divisor))
            resets.append(int(w.entries[0][0]) + rule.window_ms - now_ms)
        holds, left = [], []
        for j, room in enumerate(free):
            hold = min(reserve_nano, room)
            b = self._budget(budget_keys[2 * j])
            b.holds[admission_id] = hold
            b.held += hold
            holds.append(hold)
            left.append(room - hold)
        return Admitted(now_ms, tuple(remaining), tuple(resets), tuple(left), tuple(holds))

    def _interval(self, rule: WindowRule) -> float:
        """A paced rule's spacing for this process: its share of the rate."""
        return rule.window_ms / self.share(rule.limit)

    def _burst(self, rule: WindowRule) -> int:
        return max(rule.burst // self.divisor, 1)

    @staticmethod
    def _retry_ms(w: _Window, weight: int, limit: int, window_ms: int, now_ms: int) -> int:
        if weight > limit:
            return -1
        need, freed = w.total + weight - limit, 0
        for at, _, wt in w.entries:
            freed += int(wt)
            if freed >= need:
                return int(at) + window_ms - now_ms
        return window_ms

    @staticmethod
    def _add(w: _Window, admission_id: str, at_ms: int, weight: int) -> None:
        entry: list[int | str] = [at_ms, admission_id, weight]
        # Entries arrive in time order except when clocks disagree; keep the deque sorted.
        if w.entries and int(w.entries[-1][0]) > at_ms:
            entry[0] = int(w.entries[-1][0])
        w.entries.append(entry)
        w.by_id[admission_id] = entry
        w.total += weight

    def mirror(
        self,
        rules: Rules,
        admission_id: str,
        admitted: Admitted,
        weights: tuple[int, ...],
        budget_keys: tuple[str, ...],
    ) -> None:
        """Record an admission Redis decided, and what Redis says is left in each budget."""
        window_keys = rules.window_keys()
        for i, (rule, weight) in enumerate(zip(rules.windows, weights, strict=True)):
            w = self._window(window_keys[2 * i])
            if rule.burst:
                # Redis' arrival time, as it is: alone, each process goes on at its share of
                # the rate from where the whole team stands, so together they keep the rate
                # (what this process alone took from Redis does not matter to that).
                w.tat = float(admitted.now_ms + admitted.reset_ms[i])
                continue
            w.purge(admitted.now_ms - rule.window_ms)
            self._add(w, admission_id, admitted.now_ms, weight)
            w.seen_left, w.freed, w.alone = admitted.remaining[i], 0, 0
        for j, left in enumerate(admitted.budget_left):
            self.seen_left[budget_keys[2 * j]] = left

    def slice_taken(self, s: Slice) -> None:
        """A slice from Redis (slices.py): counted here whole, as one admission, until it goes
        back (what this process admits from it is not mirrored one by one)."""
        admitted = Admitted(s.at_ms, s.remaining, s.reset_ms, s.budget_left, ())
        self.mirror(s.rules, s.id, admitted, s.sizes, s.budget_keys)

    def slice_returned(self, s: Slice) -> None:
        """The slice went back: here it now weighs what was admitted from it (one never
        taken, e.g. a grant given back after a timeout, is not here: nothing to do)."""
        used = tuple(size - left for size, left in zip(s.sizes, s.left, strict=True))
        self.settle(s.rules.window_keys(), (), s.id, used, 0, False)

    def settle(
        self,
        window_keys: tuple[str, ...],
        budget_keys: tuple[str, ...],
        admission_id: str,
        new: tuple[int, ...],
        cost_nano: int,
        decided_here: bool,
    ) -> None:
        """Real weights in place of estimates; a local hold becomes unreplayed local spend."""
        for i, weight in enumerate(new):
            w = self._windows.get(window_keys[2 * i])
            entry = w.by_id.get(admission_id) if w is not None else None
            if w is not None and entry is not None:
                w.total += weight - int(entry[2])
                entry[2] = weight
        for j in range(len(budget_keys) // 2):
            b = self._budgets.get(budget_keys[2 * j])
            if b is None:
                continue
            b.held -= b.holds.pop(admission_id, 0)
            if decided_here:
                b.spent += cost_nano

    def replayed(self, budget_keys: tuple[str, ...], cost_nano: int) -> None:
        """Spend decided here has reached Redis: it no longer counts against the local share."""
        for j in range(len(budget_keys) // 2):
            b = self._budgets.get(budget_keys[2 * j])
            if b is not None:
                b.spent = max(b.spent - cost_nano, 0)
