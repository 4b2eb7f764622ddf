"""Settlements on their way to Redis: a few ms late and batched, journaled while Redis
cannot take them, replayed in order when it can."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.limits.admission import NANO
from gateway.limits.calls import Settlement
from gateway.limits.local import LocalLimits
from gateway.limits.store import BATCH_MAX, RedisStore
from gateway.metrics import Metrics

JOURNAL_MAX = 100_000
# Settlements wait this long for others to share their script call (the hold covers the
# request until then).
SETTLE_DELAY_S = 0.005
# While the journal is not empty, it is replayed this often, requests or not.
RETRY_S = 1.0


class Delivery:
    """Sends a limiter's settlements to Redis; `journal` holds what Redis has not taken yet,
    each with whether this process decided it."""

    def __init__(
        self,
        store: RedisStore | None,
        local: LocalLimits,
        metrics: Metrics,
        failed: Callable[[BaseException], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._store, self._local, self._metrics = store, local, metrics
        self._failed, self._spawn = failed, spawn
        self.journal: deque[tuple[Settlement, bool]] = deque()
        self.flushing = False
        self._outbox: list[tuple[Settlement, bool]] = []
        self._shipping = False
        self._retrying: asyncio.Task[None] | None = None

    def send(self, s: Settlement, decided_here: bool) -> None:
        """Queue a settlement; it goes with those of the next SETTLE_DELAY_S. While the journal
        holds any, it goes behind them: a team's calls reach Redis in the order they were
        sent (a slice's return before the settlements of what it made entries of)."""
        if self.journal:
            self._journal(s, decided_here)
            return
        self._outbox.append((s, decided_here))
        if not self._shipping:
            self._shipping = True
            self._spawn(self._ship())

    def close(self) -> None:
        """Stop retrying the journal (shutdown)."""
        if self._retrying is not None:
            self._retrying.cancel()

    async def _ship(self) -> None:
        """Send what settled in each SETTLE_DELAY_S, per team BATCH_MAX to a call, one batch
        after the other (one shipper at a time, so batches cannot overtake each other)."""
        try:
            while self._outbox:
                await asyncio.sleep(SETTLE_DELAY_S)
                batch, self._outbox = self._outbox, []
                await self._send_batch(batch)
        finally:
            self._shipping = False

    async def _send_batch(self, batch: list[tuple[Settlement, bool]]) -> None:
        assert self._store is not None
        by_tag: dict[str, list[tuple[Settlement, bool]]] = {}
        for item in batch:
            by_tag.setdefault(item[0].tag, []).append(item)
        for group in by_tag.values():
            for start in range(0, len(group), BATCH_MAX):
                chunk = group[start : start + BATCH_MAX]
                if self.journal:  # an earlier call of the batch failed: the rest goes behind
                    for s, decided_here in chunk:
                        self._journal(s, decided_here)
                    continue
                if len(chunk) == 1:
                    await self.apply(*chunk[0])
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

    async def apply(self, s: Settlement, decided_here: bool, replay: bool = False) -> bool:
        """Apply one settlement now; whether Redis took it (if not, it is journaled, unless it
        is a replay: that one is still at the journal's head)."""
        assert self._store is not None
        try:
            await self._store.settle(s)
        except Exception as exc:
            self._failed(exc)
            if not replay:
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

    async def flush(self) -> None:
        """Replay journaled settlements in order, stopping at the first failure. Each stays
        at the journal's head until Redis has it."""
        self.flushing = True
        try:
            while self.journal:
                head = self.journal[0]
                if not await self.apply(*head, replay=True):
                    return
                if self.journal and self.journal[0] is head:  # not dropped meanwhile (full)
                    self.journal.popleft()
        finally:
            self.flushing = False

    async def _retry_journal(self) -> None:
        """Replay the journal every RETRY_S while it lasts: a process that gets no request
        to probe Redis with must not keep what it spent alone to itself. Not one of the
        drained tasks (it lasts as long as the outage)."""
        while self.journal:
            await asyncio.sleep(RETRY_S)
            if not self.flushing:
                await self.flush()
