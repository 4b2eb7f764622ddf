"""Circuit state shared by the gateway's replicas through Redis (`breakers: {shared: redis}`).

Off the request path both ways. A circuit that opens or closes in this worker is noted in
an outbox (a dict write in the breaker's change callback, no I/O); every `SYNC_S` a
background loop writes the outbox into one Redis hash (`gateway:breakers`, breaker key →
``"<open|closed> <until, epoch seconds> <origin>"``) and reads the whole hash back in the
same round trip. What another worker or replica wrote since the last read is applied here:

- ``open`` until T: this circuit is held open until T as well (unless it already is, longer),
  so every replica stops sending to a failing backend within about one `SYNC_S`;
- ``closed``: an open circuit here may take its probe at once (as after a passing health
  check); only a real request closes it.

Times cross machines as wall-clock seconds, converted to each process's monotonic clock
when applied (clock skew between machines shifts a held circuit's end by as much). With
Redis slow or down the round is skipped and counted
(`gateway_cache_errors_total{operation="breaker_sync"}`), the outbox is kept for the next
round, and circuits go on working on local state alone.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from gateway.breakers import Breakers, State

if TYPE_CHECKING:
    from gateway.services import Services

SYNC_S = 0.25
# How often a worker whose policy does not share circuits looks again (after a reload).
IDLE_S = 1.0
HASH = "gateway:breakers"


class BreakerSync:
    """One worker's side of the shared circuit state."""

    def __init__(self) -> None:
        self.origin = secrets.token_hex(6)
        # Breaker key → the value to write (only the latest change of each counts).
        self.outbox: dict[str, str] = {}
        # Breaker key → the value last read, so that only changes are applied.
        self.seen: dict[str, str] = {}
        # Set from the policy by the loop; off, nothing is noted.
        self.enabled = False
        self._applying = False

    def note(self, key: str, state: State, open_until: float) -> None:
        """A circuit changed in this worker (its change callback); ignored while applying."""
        if not self.enabled or self._applying or state is State.HALF_OPEN:
            return
        until = time.time() + open_until - time.monotonic() if state is State.OPEN else 0.0
        self.outbox[key] = f"{state.name.lower()} {until:.3f} {self.origin}"

    async def exchange(self, redis: Any) -> dict[str, str]:
        """Write the outbox and read every replica's state (one round trip)."""
        sent = dict(self.outbox)
        async with redis.pipeline(transaction=False) as pipe:
            if sent:
                pipe.hset(HASH, mapping=sent)
            pipe.hgetall(HASH)
            results = await pipe.execute()
        for key, value in sent.items():
            if self.outbox.get(key) == value:
                del self.outbox[key]
        return {_text(k): _text(v) for k, v in results[-1].items()}

    def apply(self, shared: dict[str, str], breakers: Breakers, keys: Collection[str]) -> int:
        """Apply what others changed since the last read; how many changes were applied."""
        now, wall = time.monotonic(), time.time()
        applied = 0
        for key, value in shared.items():
            if self.seen.get(key) == value:
                continue
            self.seen[key] = value
            parts = value.split(" ")
            if len(parts) != 3 or parts[2] == self.origin or key not in keys:
                continue
            try:
                until = float(parts[1])
            except ValueError:
                continue
            self._applying = True
            try:
                if parts[0] == "open":
                    breakers[key].hold(now, now + until - wall)
                    applied += 1
                elif parts[0] == "closed":
                    breakers[key].healthy(now)
                    applied += 1
            finally:
                self._applying = False
        return applied


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def breaker_keys(services: Services) -> set[str]:
    """The breaker keys of the current policy (a backend's, or each of its replicas')."""
    keys: set[str] = set()
    for backend in services.state.loaded.policy.backends.values():
        keys.update(way.key for way in backend.replicas or (backend,))
    return keys


def refresh(services: Services) -> bool:
    """Whether the current policy shares circuits through Redis (set on the worker's sync)."""
    sync = services.breaker_sync
    shared = services.state.loaded.policy.breakers.shared == "redis"
    sync.enabled = services.background_redis is not None and shared
    return sync.enabled


async def run(services: Services) -> None:
    """Every `SYNC_S`, while the policy shares circuits through Redis: one exchange.

    Whether it does is decided before the first request (the app calls `refresh` at
    startup), so a circuit that opens in a worker's first second is shared too (before, it
    was noted only once the loop's first sleep had ended, and one opened earlier stayed
    local: `test_two_gateway_replicas_share_an_open_circuit` failed when its requests came
    that early).
    """
    sync = services.breaker_sync
    redis = services.background_redis
    while True:
        await asyncio.sleep(SYNC_S if sync.enabled else IDLE_S)
        if not refresh(services):
            sync.outbox.clear()
            continue
        try:
            shared = await sync.exchange(redis)
        except Exception:  # Redis away: local state alone until it is back
            services.metrics.cache_errors.labels("breaker_sync").inc()
            continue
        sync.apply(shared, services.breakers, breaker_keys(services))
