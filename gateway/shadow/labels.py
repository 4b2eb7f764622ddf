"""Where labels and retained requests live: Redis when configured, in-process otherwise.

Labels go to one bounded Redis stream (`XADD ... MAXLEN ~`), each entry a label record as
JSON; without Redis, a ring of the most recent ones. Requests of teams that opted in to
prompt retention are kept by tenant partition and request id with a TTL, so feedback can
be joined to them and no tenant can read another's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from gateway.errors import UpstreamUnavailable

log = logging.getLogger("gateway.shadow")
STREAM = "gateway:labels:v1"
RETAINED = "gateway:retained:v1"
_LOCAL_MAX = 10_000


def store_unavailable() -> UpstreamUnavailable:
    """The 503 for a label or feedback request while Redis cannot be reached."""
    return UpstreamUnavailable("The label store is unavailable.", code="labels_unavailable")


class LabelStore:
    """Append and read label records."""

    def __init__(self, redis: Any, timeout_s: float, max_len: int) -> None:
        self._redis = redis
        self._timeout = timeout_s
        self._max_len = max_len
        self._ring: deque[dict[str, Any]] = deque(maxlen=min(max_len, _LOCAL_MAX))

    async def add(self, record: dict[str, Any]) -> None:
        """Append one record (Redis errors raise: the caller counts the label as failed)."""
        if self._redis is None:
            self._ring.append(record)
            return
        async with asyncio.timeout(self._timeout):
            await self._redis.xadd(
                STREAM, {"record": orjson.dumps(record)}, maxlen=self._max_len, approximate=True
            )

    async def read(
        self, since: float | None = None, team: str | None = None, model: str | None = None
    ) -> list[dict[str, Any]]:
        """Records, oldest first, filtered by time (epoch seconds), team and model."""
        if self._redis is None:
            records = list(self._ring)
        else:
            start = f"{int(since * 1000)}-0" if since is not None else "-"
            entries = await self._redis.xrange(STREAM, min=start, max="+")
            records = [orjson.loads(fields[b"record"]) for _, fields in entries]
        return [
            r
            for r in records
            if (since is None or r.get("ts", 0) >= since)
            and (team is None or r.get("team") == team)
            and (model is None or r.get("model") == model)
        ]


class Retained:
    """Requests kept for feedback, per tenant partition, for ``ttl_s`` seconds.

    `offer` is what the request path calls: no I/O and no task per request. Without Redis it
    stores in place; with Redis it queues, and one background flush at a time writes the
    queue in a pipeline.
    """

    def __init__(
        self,
        redis: Any,
        timeout_s: float,
        ttl_s: int,
        spawn: Callable[[Coroutine[Any, Any, None]], None] | None = None,
    ) -> None:
        self._redis = redis
        self._timeout = timeout_s
        self._ttl = ttl_s
        self._spawn = spawn
        self._local: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._queued: dict[str, bytes] = {}
        self._flushing = False

    def offer(self, partition: str, request_id: str, record: dict[str, Any]) -> None:
        """Keep a request for feedback, off the request path."""
        key = self._key(partition, request_id)
        if self._redis is None:
            self._local[key] = (time.monotonic() + self._ttl, record)
            while len(self._local) > _LOCAL_MAX:
                self._local.popitem(last=False)
            return
        if len(self._queued) < _LOCAL_MAX:  # Redis far behind: drop rather than grow
            self._queued[key] = orjson.dumps(record)
        if not self._flushing and self._spawn is not None:
            self._flushing = True
            self._spawn(self._flush())

    async def _flush(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, {}
                async with asyncio.timeout(self._timeout):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for key, value in batch.items():
                            pipe.set(key, value, ex=self._ttl)
                        await pipe.execute()
        except Exception:
            log.warning("retained requests not written to Redis", exc_info=False)
        finally:
            self._flushing = False

    @staticmethod
    def _key(partition: str, request_id: str) -> str:
        return f"{RETAINED}:{partition}:{request_id}"

    async def find(self, partition: str, request_id: str) -> dict[str, Any] | None:
        """The kept request of this tenant, if any (another tenant's is never found)."""
        key = self._key(partition, request_id)
        queued = self._queued.get(key)
        if queued is not None:  # not flushed yet
            found_now: dict[str, Any] = orjson.loads(queued)
            return found_now
        if self._redis is None:
            found = self._local.get(key)
            if found is None or found[0] < time.monotonic():
                return None
            return found[1]
        async with asyncio.timeout(self._timeout):
            raw = await self._redis.get(key)
        return orjson.loads(raw) if raw else None
