"""Exact response cache: Redis when configured, an in-process LRU otherwise.

Entries are partitioned per tenant and keyed by the normalised request plus the policy
version, so a policy or backend model change never serves an old answer. Every Redis call is
bounded by a short timeout; a failing Redis makes the cache a no-op, never an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.tasks import Background

log = logging.getLogger("gateway.cache")

PREFIX = "gateway:cache:v2"
# Request fields that do not change the answer's content.
_NOT_IN_KEY = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier"})


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A stored whole answer, what produced it, and the request's difficulty score."""

    body: bytes
    backend: str
    tier: str
    prompt_tokens: int
    completion_tokens: int
    score: float | None = None
    scorer: str = ""  # the classifier version that computed `score`
    # "chat": an OpenAI answer; else a door's own (a Message, a Response, or their events).
    dialect: str = "chat"

    def dumps(self) -> bytes:
        """Serialise: a small JSON header line, then the answer's bytes as they were."""
        head = [self.backend, self.tier, self.prompt_tokens, self.completion_tokens]
        head += [self.score, self.scorer, self.dialect]
        return orjson.dumps(head) + b"\n" + self.body

    @classmethod
    def loads(cls, raw: bytes) -> CachedAnswer | None:
        """Parse a stored entry (with or without a score); None if it is damaged."""
        head, _, body = raw.partition(b"\n")
        try:
            backend, tier, prompt, completion, *rest = orjson.loads(head)
            tokens = int(prompt), int(completion)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return None
        score = rest[0] if rest else None
        dialect = str(rest[2]) if len(rest) > 2 else "chat"
        if not isinstance(score, int | float) or isinstance(score, bool):
            return cls(body, str(backend), str(tier), *tokens, dialect=dialect)
        scorer = str(rest[1]) if len(rest) > 1 else ""
        return cls(body, str(backend), str(tier), *tokens, float(score), scorer, dialect)


def cache_key(
    partition: str, model: str, policy_version: str, endpoint: str, body: dict[str, Any]
) -> str:
    """The key of a request: tenant and model readable (for purges), the rest hashed.

    Tenant and model are escaped so that neither can contain the `:` that separates them:
    team `a:b` asking for `c` and team `a` asking for `b:c` never share a key.
    """
    relevant = {k: v for k, v in body.items() if k not in _NOT_IN_KEY}
    digest = hashlib.sha256(
        orjson.dumps([policy_version, endpoint, relevant], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    return f"{PREFIX}:{_component(partition)}:{_component(model)}:{digest}"


def _component(value: str) -> str:
    """A key component without `:` (percent-escaped, reversibly)."""
    return value.replace("%", "%25").replace(":", "%3A")


class ResponseCache(Protocol):
    """Where answers are kept."""

    kind: str

    async def get(self, key: str) -> bytes | None:
        """The stored value, or None (also when the store is unavailable)."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        """Store a value; failures are counted and swallowed."""
        ...

    async def purge(self, partition: str | None, model: str | None) -> int:
        """Delete entries of a tenant and/or model; return how many."""
        ...


class MemoryCache:
    """A bounded LRU (entries and bytes) with per-entry expiry, local to the worker."""

    kind = "memory"

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    async def get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self._data:
            self._drop(key)
        self._data[key] = (time.monotonic() + ttl_s, value)
        self._bytes += len(value)
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._data)))

    async def delete(self, key: str) -> bool:
        """Forget one entry; whether it was there."""
        if key not in self._data:
            return False
        self._drop(key)
        return True

    async def purge(self, partition: str | None, model: str | None) -> int:
        doomed = [k for k in self._data if _matches(k, partition, model)]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    def _drop(self, key: str) -> None:
        _, value = self._data.pop(key)
        self._bytes -= len(value)


def _matches(key: str, partition: str | None, model: str | None) -> bool:
    part, key_model, _ = key[len(PREFIX) + 1 :].split(":")
    return (partition is None or part == _component(partition)) and (
        model is None or key_model == _component(model)
    )


class RedisCache:
    """Redis-backed cache; any error or timeout turns an operation into a counted miss."""

    kind = "redis"

    def __init__(
        self, redis: Any, timeout_s: float, metrics: Metrics, background: Background
    ) -> None:
        self._redis = redis
        self._timeout = timeout_s
        self._metrics = metrics
        self._background = background

    async def get(self, key: str) -> bytes | None:
        try:
            # `timeout` instead of `wait_for`: no extra task per lookup on Python 3.11.
            async with asyncio.timeout(self._timeout):
                value = await self._redis.get(key)
        except Exception as exc:  # any Redis trouble is a miss, never an error
            self._metrics.cache_errors.labels("get").inc()
            log.debug("cache get failed", extra={"error": type(exc).__name__})
            return None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        # Writes go in the background so the client never waits on them.
        self._background.spawn(self._set(key, value, ttl_s))

    async def _set(self, key: str, value: bytes, ttl_s: int) -> None:
        try:
            await asyncio.wait_for(self._redis.set(key, value, ex=ttl_s), self._timeout * 5)
        except Exception as exc:
            self._metrics.cache_errors.labels("set").inc()
            log.debug("cache set failed", extra={"error": type(exc).__name__})

    async def purge(self, partition: str | None, model: str | None) -> int:
        pattern = f"{PREFIX}:{_glob(partition)}:{_glob(model)}:*"
        deleted = 0
        batch: list[bytes] = []
        async for key in self._redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(await self._redis.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(await self._redis.unlink(*batch))
        return deleted


def _glob(value: str | None) -> str:
    if value is None:
        return "*"
    return "".join(f"[{c}]" if c in "*?[]\\" else c for c in _component(value))


def build_cache(
    settings: Settings, redis: Any, metrics: Metrics, background: Background
) -> ResponseCache:
    """Redis when a URL is configured, else the in-process LRU."""
    if redis is not None:
        return RedisCache(redis, settings.redis_timeout_ms / 1000, metrics, background)
    return MemoryCache(settings.cache_max_entries, settings.cache_max_bytes)
