"""Stored Responses (`store: true`): what `previous_response_id` and GET /v1/responses/{id} read.

A record is `{"response": ..., "items": [...], "history": [...]}`: the Response as the client
got it, its input items (for `input_items`), and the conversation so far as chat messages.
Keys carry the tenant's partition, so one tenant can never read another's responses. In
Redis with a TTL when configured, in an in-process LRU otherwise. A write that fails is
logged and counted (the answer has been given already); a read that fails is a 503, since
a missing conversation would be a wrong answer, not a slower one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import orjson

from gateway.cache import MemoryCache
from gateway.errors import UpstreamUnavailable
from gateway.metrics import Metrics
from gateway.settings import Settings

log = logging.getLogger("gateway.responses")

PREFIX = "gateway:responses:v1"


def key_for(partition: str, response_id: str) -> str:
    """The store key of a tenant's response."""
    return f"{PREFIX}:{partition}:{response_id}"


class ResponseStore(Protocol):
    """Where stored responses are kept."""

    async def get(self, partition: str, response_id: str) -> dict[str, Any] | None:
        """The record, or None when there is none for this tenant."""
        ...

    async def put(self, partition: str, response_id: str, record: dict[str, Any]) -> None:
        """Keep a record (failures are logged, never raised)."""
        ...

    async def delete(self, partition: str, response_id: str) -> bool:
        """Forget a record; whether there was one."""
        ...


def _loads(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


class MemoryResponses:
    """The in-process store: a bounded LRU with expiry, local to the worker."""

    def __init__(self, ttl_s: int, max_entries: int, max_bytes: int) -> None:
        self._lru = MemoryCache(max_entries, max_bytes)
        self._ttl_s = ttl_s

    async def get(self, partition: str, response_id: str) -> dict[str, Any] | None:
        return _loads(await self._lru.get(key_for(partition, response_id)))

    async def put(self, partition: str, response_id: str, record: dict[str, Any]) -> None:
        await self._lru.set(key_for(partition, response_id), orjson.dumps(record), self._ttl_s)

    async def delete(self, partition: str, response_id: str) -> bool:
        return await self._lru.delete(key_for(partition, response_id))


class RedisResponses:
    """Redis-backed: shared by every replica, each record with its TTL."""

    def __init__(self, redis: Any, ttl_s: int, timeout_s: float, metrics: Metrics) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        # A record can be large; allow more than a cache lookup's budget.
        self._timeout_s = timeout_s * 5
        self._metrics = metrics

    async def get(self, partition: str, response_id: str) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                raw = await self._redis.get(key_for(partition, response_id))
        except Exception as exc:
            raise _unavailable("get", exc) from exc
        return _loads(raw if isinstance(raw, bytes) else None)

    async def put(self, partition: str, response_id: str, record: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                key = key_for(partition, response_id)
                await self._redis.set(key, orjson.dumps(record), ex=self._ttl_s)
        except Exception as exc:  # the answer is out already: count it, do not fail it
            self._metrics.cache_errors.labels("responses_set").inc()
            log.warning("storing a response failed", extra={"error": type(exc).__name__})

    async def delete(self, partition: str, response_id: str) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                deleted = await self._redis.delete(key_for(partition, response_id))
        except Exception as exc:
            raise _unavailable("delete", exc) from exc
        return bool(deleted)


def _unavailable(operation: str, exc: Exception) -> UpstreamUnavailable:
    log.warning("response store %s failed", operation, extra={"error": type(exc).__name__})
    return UpstreamUnavailable("The response store is unavailable; try again shortly.")


def build_response_store(settings: Settings, redis: Any, metrics: Metrics) -> ResponseStore:
    """Redis when a URL is configured, else the in-process LRU."""
    if redis is not None:
        timeout_s = settings.redis_timeout_ms / 1000
        return RedisResponses(redis, settings.responses_ttl_s, timeout_s, metrics)
    return MemoryResponses(
        settings.responses_ttl_s, settings.responses_max_entries, settings.responses_max_bytes
    )
