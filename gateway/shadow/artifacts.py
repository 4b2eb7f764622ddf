"""The live classifier artifact, shared by every replica through Redis.

    gateway:router:v1:artifact:<version>   an artifact's bytes (kept for rollbacks)
    gateway:router:v1:current              the version every replica serves
    gateway:router:v1:previous             the one before it (rollback)
    gateway:router:v1:lock                 the replica adapting right now (SET NX with a TTL)

Without Redis the live artifact is this process's alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

PREFIX = "gateway:router:v1"
CURRENT, PREVIOUS, LOCK = f"{PREFIX}:current", f"{PREFIX}:previous", f"{PREFIX}:lock"


def _artifact_key(version: str) -> str:
    return f"{PREFIX}:artifact:{version}"


class ArtifactStore:
    """Publish, read and roll back the live artifact (Redis, or nothing to share)."""

    def __init__(self, redis: Any, timeout_s: float) -> None:
        self._redis = redis
        self._timeout = timeout_s

    @property
    def shared(self) -> bool:
        """Whether replicas share the artifact (Redis configured)."""
        return self._redis is not None

    async def current(self) -> str | None:
        """The version the replicas should serve (None: the one each started with)."""
        if self._redis is None:
            return None
        async with asyncio.timeout(self._timeout):
            value = await self._redis.get(CURRENT)
        return value.decode() if isinstance(value, bytes) else None

    async def fetch(self, version: str) -> bytes | None:
        """An artifact's bytes."""
        if self._redis is None:
            return None
        async with asyncio.timeout(self._timeout):
            value = await self._redis.get(_artifact_key(version))
        return value if isinstance(value, bytes) else None

    async def publish(self, version: str, data: bytes, replaced: str) -> None:
        """Make ``version`` live everywhere; ``replaced`` becomes the rollback target."""
        if self._redis is None:
            return
        async with asyncio.timeout(self._timeout):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(_artifact_key(version), data)
                pipe.set(PREVIOUS, replaced)
                pipe.set(CURRENT, version)
                await pipe.execute()

    async def keep(self, version: str, data: bytes) -> None:
        """Store an artifact's bytes without making it live (the base a rollback returns to)."""
        if self._redis is not None:
            async with asyncio.timeout(self._timeout):
                await self._redis.set(_artifact_key(version), data, nx=True)

    async def rollback(self) -> str | None:
        """Swap current and previous; the version now live, or None when there is none."""
        if self._redis is None:
            return None
        async with asyncio.timeout(self._timeout):
            current, previous = await self._redis.mget(CURRENT, PREVIOUS)
            if previous is None:
                return None
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(CURRENT, previous)
                if current is not None:
                    pipe.set(PREVIOUS, current)
                await pipe.execute()
        return previous.decode() if isinstance(previous, bytes) else str(previous)

    async def lock(self, holder: str, ttl_s: float) -> bool:
        """Take the adaptation lock (one replica adapts at a time); True if taken."""
        if self._redis is None:
            return True
        async with asyncio.timeout(self._timeout):
            return bool(await self._redis.set(LOCK, holder, nx=True, px=int(ttl_s * 1000)))
