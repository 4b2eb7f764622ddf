"""Admit, settle, release: the limiter the pipeline talks to.

    admission = await limiter.admit(tenant, est_prompt_tokens, reserve_usd)   # may raise 429
    ... call the backend ...
    limiter.settle(admission, prompt_tokens, completion_tokens, cost_usd)   # or
    limiter.release(admission)                                              # on failure

Redis decides when it answers within the timeout; otherwise (or for a while after a failure)
this process decides alone with its share of each limit, or refuses if the team fails
closed. Settlements that cannot reach Redis are journaled and replayed when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.auth import Tenant
from gateway.errors import GatewayError, LimitsUnavailable
from gateway.limits.admission import NANO, Admission, refusal, to_nano
from gateway.limits.local import LocalLimits
from gateway.limits.rules import Rules, rules_for
from gateway.limits.store import (
    BATCH_MAX,
    MAX_WAIT_S,
    Admitted,
    RedisStore,
    Refused,
    Settlement,
    own_connections,
    settlement,
)
from gateway.metrics import Metrics
from gateway.settings import Settings

log = logging.getLogger("gateway.limits")

# After a Redis failure, decide locally this long before asking Redis again.
BACKOFF_S = 1.0
JOURNAL_MAX = 100_000
# Back from an outage, a journal this short is replayed before the probe's own check.
INLINE_REPLAY = 256
# Settlements wait this long for others to share their script call.
SETTLE_DELAY_S = 0.005


class Limiter:
    """Request and token windows and budgets per team and key, shared through Redis."""

    def __init__(
        self,
        redis: Any,
        metrics: Metrics,
        *,
        timeout_s: float = 0.1,
        processes: int = 1,
        lease_s: float = 900.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._store = RedisStore(redis, lease_s, timeout_s) if redis is not None else None
        self._local = LocalLimits(processes)
        self._metrics = metrics
        # Tests inject a clock; otherwise Redis' own clock times the windows.
        self._clock = clock
        self._down = False
        self._down_until = 0.0
        # Settlements Redis has not taken yet, each with whether this process decided it.
        self.journal: deque[tuple[Settlement, bool]] = deque()
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._retrying: asyncio.Task[None] | None = None
        self._outbox: list[tuple[Settlement, bool]] = []
        self._shipping = False
        self._rules: dict[int, tuple[Tenant, Rules]] = {}
        self._own: Any = None

    @classmethod
    def from_settings(cls, redis: Any, settings: Settings, metrics: Metrics) -> Limiter:
        """A limiter for this process: its share is 1 / (replicas × workers).

        It gets its own connections to `redis`'s server: the shared client's socket timeout is
        the cache's (milliseconds), and under CPU pressure that would fail checks that Redis
        answered in time; the limiter bounds its waits itself.
        """
        own = own_connections(redis, MAX_WAIT_S + 1) if redis is not None else None
        limiter = cls(
            own,
            metrics,
            timeout_s=settings.limits_timeout_ms / 1000,
            processes=max(settings.replicas, 1) * max(settings.workers, 1),
            lease_s=settings.limits_lease_s,
        )
        limiter._own = own
        return limiter

    async def close(self) -> None:
        """Finish background settlements; close the connections from `from_settings`."""
        await self.drain()
        if self._retrying is not None:
            self._retrying.cancel()
        if self._store is not None:
            await self._store.aclose()
        if self._own is not None:
            await self._own.aclose()

    def rules(self, tenant: Tenant) -> Rules:
        """The limits of a tenant (memoised per tenant object)."""
        cached = self._rules.get(id(tenant))
        if cached is not None and cached[0] is tenant:
            return cached[1]
        if len(self._rules) > 10_000:
            self._rules.clear()
        rules = rules_for(tenant)
        self._rules[id(tenant)] = (tenant, rules)
        return rules

    async def admit(self, tenant: Tenant, prompt_tokens: int, reserve_usd: float) -> Admission:
        """Count the request in every window and hold `reserve_usd` in every budget, or raise
        RateLimited / BudgetExceeded (429) or LimitsUnavailable (503, fail closed)."""
        rules = self.rules(tenant)
        aid = f"{random.getrandbits(64):016x}"
        if rules.empty:
            return Admission(aid, rules, 0, prompt_tokens, (), (), (), (), done=True)
        now = self._clock() if self._clock is not None else time.time()
        weights = tuple(1 if w.kind == "requests" else prompt_tokens for w in rules.windows)
        reserve = to_nano(reserve_usd)
        budget_keys = rules.budget_keys(now)
        result, local = await self._decide(rules, aid, now, weights, reserve, budget_keys)
        if isinstance(result, Refused):
            raise self._refusal(rules, result, now)
        admission = Admission(
            aid,
            rules,
            result.now_ms,
            prompt_tokens,
            weights,
            tuple(rules.window_keys()),
            tuple(budget_keys),
            result.holds,
            result.remaining,
            result.reset_ms,
            local=local,
            reserve=reserve,
        )
        admission.fill_headers()
        share = rules.soft_share
        for budget, left in zip(rules.budgets, result.budget_left, strict=True):
            limit = budget.limit_usd * NANO
            if share is not None and limit - left >= share * limit:
                admission.soft_exceeded = True
            if budget.scope == "team":
                self._metrics.budget_remaining.labels(rules.team, budget.period).set(left / NANO)
        return admission

    async def _decide(
        self,
        rules: Rules,
        aid: str,
        now: float,
        weights: tuple[int, ...],
        reserve: int,
        budget_keys: list[str],
    ) -> tuple[Admitted | Refused, bool]:
        now_ms = round(now * 1000)
        if self._store is None:
            return self._local.admit(rules, aid, now_ms, weights, reserve, budget_keys), True
        mono = time.monotonic()
        if self._down and mono >= self._down_until:
            # This request probes; the others decide locally meanwhile. What this process
            # let through alone goes to Redis first (here when it is short, else in the
            # background), and Redis decides again only once it counts all of it.
            self._down_until = mono + BACKOFF_S
            if self.journal and not self._flushing:
                if len(self.journal) <= INLINE_REPLAY:
                    await self._flush()
                else:
                    self._spawn(self._flush())
            probe = not self.journal
        else:
            probe = not self._down
        if probe:
            try:
                result = await self._store.admit(
                    rules, aid, now_ms if self._clock else 0, now, weights, reserve, budget_keys
                )
            except Exception as exc:  # slow or down: this process decides alone below
                self._failed(exc)
            else:
                self._down = False
                if isinstance(result, Admitted):
                    self._local.mirror(rules, aid, result, weights, budget_keys)
                if self.journal and not self._flushing:
                    self._spawn(self._flush())
                return result, False
        if rules.fail == "closed":
            raise LimitsUnavailable(
                f"Limits for team {rules.team!r} cannot be checked right now; retry shortly.",
                headers={"retry-after": "1"},
            )
        local = self._local.admit(rules, aid, now_ms, weights, reserve, budget_keys)
        outcome = "refused" if isinstance(local, Refused) else "admitted"
        self._metrics.limit_local.labels(rules.team, outcome).inc()
        return local, True

    def _failed(self, exc: BaseException) -> None:
        self._down = True
        self._down_until = time.monotonic() + BACKOFF_S
        self._metrics.cache_errors.labels("limits").inc()
        log.warning(
            "limits: Redis unavailable, enforcing the local share",
            extra={"error": repr(exc)[:200]},
        )

    def _refusal(self, rules: Rules, refused: Refused, now: float) -> GatewayError:
        reason = "budget" if refused.budget else "rate_limit"
        self._metrics.rejections.labels(rules.team, reason).inc()
        return refusal(rules, refused.budget, refused.index, refused.retry_ms, now)

    def settle(
        self,
        admission: Admission | None,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
    ) -> None:
        """Real tokens in place of the estimate, real cost in place of the hold (background)."""
        if admission is None or admission.done:
            return
        admission.done = True
        rules = admission.rules
        used = prompt_tokens + completion_tokens
        new = tuple(1 if w.kind == "requests" else used for w in rules.windows)
        cost = max(round(cost_usd * NANO), 0)
        aid = admission.id
        wk, bk = admission.window_keys, admission.budget_keys
        self._local.settle(wk, bk, aid, new, cost, admission.local)
        if self._store is None:
            return
        now = self._clock() if self._clock is not None else time.time()
        now_ms = round(now * 1000) if self._clock is not None else 0
        s = settlement(
            rules,
            aid,
            wk,
            bk,
            admission.at_ms,
            admission.weights,
            new,
            # Decided alone: if Redis ran a check that had timed out here after all, it held
            # the whole estimate (mostly), so that is the hold to give back there.
            (admission.reserve,) * len(admission.holds) if admission.local else admission.holds,
            cost,
            now,
            now_ms,
            admission.local,
        )
        # Off the request path, and a few ms late: the settlements of that moment share
        # script calls (the hold covers the request until then).
        self._outbox.append((s, admission.local))
        if not self._shipping:
            self._shipping = True
            self._spawn(self._ship())

    def release(self, admission: Admission | None) -> None:
        """The request failed: give back its hold and token estimate (it still counts once)."""
        self.settle(admission, 0, 0, 0.0)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ship(self) -> None:
        """Send what settled in the last SETTLE_DELAY_S: per team, BATCH_MAX to a call."""
        try:
            await asyncio.sleep(SETTLE_DELAY_S)
        finally:
            batch, self._outbox = self._outbox, []
            self._shipping = False
        assert self._store is not None
        by_tag: dict[str, list[tuple[Settlement, bool]]] = {}
        for item in batch:
            by_tag.setdefault(item[0].tag, []).append(item)
        for group in by_tag.values():
            for start in range(0, len(group), BATCH_MAX):
                chunk = group[start : start + BATCH_MAX]
                if len(chunk) == 1:
                    await self._apply(*chunk[0])
                    continue
                try:
                    await self._store.settle_batch([s for s, _ in chunk])
                except Exception as exc:
                    self._failed(exc)
                    for s, decided_here in chunk:
                        self._journal(s, decided_here)
                    continue
                for s, decided_here in chunk:
                    self._applied(s, decided_here, replay=False)

    async def _apply(self, s: Settlement, decided_here: bool, replay: bool = False) -> bool:
        assert self._store is not None
        try:
            await self._store.settle(s)
        except Exception as exc:
            self._failed(exc)
            if not replay:  # a replayed one is still at the journal's head
                self._journal(s, decided_here)
            return False
        self._applied(s, decided_here, replay)
        return True

    def _applied(self, s: Settlement, decided_here: bool, replay: bool) -> None:
        if decided_here:
            self._local.replayed(s.keys[len(s.keys) - 2 * s.budgets :], s.cost_nano)
        if decided_here or replay:
            self._metrics.limit_spend_replayed.labels(s.team).inc(s.cost_nano / NANO)

    def _journal(self, s: Settlement, decided_here: bool) -> None:
        if len(self.journal) >= JOURNAL_MAX:
            lost, _ = self.journal.popleft()
            self._metrics.limit_spend_lost.labels(lost.team).inc(lost.cost_nano / NANO)
        self.journal.append((s, decided_here))
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.create_task(self._retry_journal())

    async def _flush(self) -> None:
        """Replay journaled settlements in order, stopping at the first failure. Each stays
        at the journal's head until Redis has it."""
        self._flushing = True
        try:
            while self.journal:
                head = self.journal[0]
                if not await self._apply(*head, replay=True):
                    return
                if self.journal and self.journal[0] is head:  # not dropped meanwhile (full)
                    self.journal.popleft()
        finally:
            self._flushing = False

    async def _retry_journal(self) -> None:
        """Replay the journal every BACKOFF_S while it lasts: a process that gets no request
        to probe Redis with must not keep what it spent alone to itself. Not one of the
        drained tasks (it lasts as long as the outage)."""
        while self.journal:
            await asyncio.sleep(max(BACKOFF_S, 0.05))
            if not self._flushing:
                await self._flush()

    async def drain(self) -> None:
        """Wait for background settlements (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
