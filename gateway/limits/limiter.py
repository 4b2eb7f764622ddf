"""Admit, settle, release: the limiter the pipeline talks to.

    admission = await limiter.admit(tenant, est_prompt_tokens, reserve_usd)   # may raise 429
    ... call the backend ...
    limiter.settle(admission, prompt_tokens, completion_tokens, cost_usd)   # or
    limiter.release(admission)                                              # on failure

Redis decides when it answers within the timeout; otherwise (or for a while after a failure)
this process decides alone with its share of each limit, or refuses if the team fails
closed. Settlements go to Redis in batches, and are journaled and replayed when it cannot
take them (delivery.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from gateway.auth import Tenant
from gateway.errors import GatewayError, LimitsUnavailable
from gateway.limits.admission import NANO, Admission, refusal, to_nano
from gateway.limits.calls import Admitted, Refused, settlement
from gateway.limits.delivery import Delivery
from gateway.limits.local import LocalLimits
from gateway.limits.rules import Rules, RulesByTenant
from gateway.limits.slices import Slice, Slicer
from gateway.limits.store import MAX_WAIT_S, RedisStore, own_connections
from gateway.metrics import Metrics
from gateway.settings import Settings

log = logging.getLogger("gateway.limits")

# After a Redis failure, decide locally this long before asking Redis again.
BACKOFF_S = 1.0
# Back from an outage, a journal this short is replayed before the probe's own check.
INLINE_REPLAY = 256


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
        slice_share: float = 0.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._store = RedisStore(redis, lease_s, timeout_s) if redis is not None else None
        self._local = LocalLimits(processes)
        self._metrics = metrics
        # Tests inject a clock; otherwise Redis' own clock times the windows.
        self._clock = clock
        self._down = False
        self._down_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._delivery = Delivery(self._store, self._local, metrics, self._failed, self._spawn)
        # Settlements Redis has not taken yet, each with whether this process decided it.
        self.journal = self._delivery.journal
        self.rules = RulesByTenant()  # the limits of a tenant
        self._own: Any = None
        self._gauges: dict[tuple[str, str], Any] = {}
        # Slices time themselves by the loop and Redis' clock: none with an injected clock.
        self._slicer: Slicer | None = None
        if self._store is not None and clock is None and slice_share > 0:
            lease_ms, local, send = str(int(lease_s * 1000)), self._local, self._delivery.send
            counted = (local.slice_taken, local.slice_returned)  # locally, a slice counts whole
            self._slicer = Slicer(
                slice_share, local.divisor, lease_ms, lambda s: send(s, False), *counted
            )

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
            slice_share=settings.limits_slice_share,
        )
        limiter._own = own
        return limiter

    async def close(self) -> None:
        """Give slices back, finish background settlements; close the connections from
        `from_settings`."""
        if self._slicer is not None:
            self._slicer.retire_all()
        await self.drain()
        self._delivery.close()
        if self._store is not None:
            await self._store.aclose()
        if self._own is not None:
            await self._own.aclose()

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
        result, local, piece = await self._decide(rules, aid, now, weights, reserve, budget_keys)
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
            slice=piece,
        )
        admission.fill_headers()
        share = rules.soft_share
        for budget, left in zip(rules.budgets, result.budget_left, strict=True):
            limit = budget.limit_usd * NANO
            if share is not None and limit - left >= share * limit:
                admission.soft_exceeded = True
            if budget.scope == "team":
                self._remaining_gauge(rules.team, budget.period).set(left / NANO)
        return admission

    def _remaining_gauge(self, team: str, period: str) -> Any:
        """The remaining-budget gauge of a team's period (looked up once)."""
        gauge = self._gauges.get((team, period))
        if gauge is None:
            if len(self._gauges) > 10_000:
                self._gauges.clear()
            gauge = self._gauges[(team, period)] = self._metrics.budget_remaining.labels(
                team, period
            )
        return gauge

    async def _decide(
        self,
        rules: Rules,
        aid: str,
        now: float,
        weights: tuple[int, ...],
        reserve: int,
        budget_keys: tuple[str, ...],
    ) -> tuple[Admitted | Refused, bool, Slice | None]:
        """Redis' decision (from this process's slice where there is one), or, Redis slow or
        down, this process's own; and whether it was its own."""
        now_ms = round(now * 1000)
        store = self._store
        if store is None:
            return self._local.admit(rules, aid, now_ms, weights, reserve, budget_keys), True, None
        if self._slicer is not None and not self._down:
            try:
                taken = await self._slicer.admit(
                    rules, aid, now, weights, reserve, budget_keys, store.ask
                )
            except Exception as exc:  # slow or down: decided below, alone
                self._failed(exc)
            else:
                if taken is not None:
                    return taken[0], False, taken[1]
        mono = time.monotonic()
        if self._down and mono >= self._down_until:
            # This request probes; the others decide locally meanwhile. What this process
            # let through alone goes to Redis first (here when it is short, else in the
            # background), and Redis decides again only once it counts all of it.
            self._down_until = mono + BACKOFF_S
            if self.journal and not self._delivery.flushing:
                if len(self.journal) <= INLINE_REPLAY:
                    await self._delivery.flush()
                else:
                    self._spawn(self._delivery.flush())
            probe = not self.journal
        else:
            probe = not self._down
        if probe:
            try:
                result = await store.admit(
                    rules, aid, now_ms if self._clock else 0, now, weights, reserve, budget_keys
                )
            except Exception as exc:  # slow or down: this process decides alone below
                self._failed(exc)
            else:
                self._down = False
                if isinstance(result, Admitted):
                    self._local.mirror(rules, aid, result, weights, budget_keys)
                if self.journal and not self._delivery.flushing:
                    self._spawn(self._delivery.flush())
                return result, False, None
        if rules.fail == "closed":
            raise LimitsUnavailable(
                f"Limits for team {rules.team!r} cannot be checked right now; retry shortly.",
                headers={"retry-after": "1"},
            )
        local = self._local.admit(rules, aid, now_ms, weights, reserve, budget_keys)
        outcome = "refused" if isinstance(local, Refused) else "admitted"
        self._metrics.limit_local.labels(rules.team, outcome).inc()
        return local, True, None

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
        if admission.slice is None:  # the local limits count a slice as a whole
            self._local.settle(wk, bk, aid, new, cost, admission.local)
        if self._store is None:
            return
        piece = admission.slice
        if (
            piece is not None
            and self._slicer is not None
            and self._slicer.settled(piece, aid, new, cost)
        ):
            return  # it goes to Redis with its slice
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
        self._delivery.send(s, admission.local)

    def release(self, admission: Admission | None) -> None:
        """The request failed: give back its hold and token estimate (it still counts once)."""
        self.settle(admission, 0, 0, 0.0)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for background settlements (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
