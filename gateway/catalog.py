"""The model names behind a wildcard (`"*"`) route, for GET /v1/models.

A backend with a fixed `model` offers that name; a passthrough backend offers what its own
`/models` lists, fetched with the backend's key and kept for a minute (a failed fetch for a
few seconds, so a dead backend is not asked on every listing). A listing never fails
because a backend did: it just names fewer models.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import orjson

from gateway.policy import Backend

log = logging.getLogger("gateway.catalog")

TTL_S = 60.0
FAILED_TTL_S = 5.0
TIMEOUT_S = 2.0


def _request(backend: Backend) -> tuple[str, dict[str, str]]:
    key = backend.api_key.get_secret_value()
    if backend.provider == "anthropic":
        headers = {"anthropic-version": "2023-06-01", **({"x-api-key": key} if key else {})}
    else:
        headers = {"authorization": f"Bearer {key}"} if key else {}
    return backend.base_url + "/models", {**headers, **backend.headers}


def _names(payload: Any) -> list[str]:
    data = payload.get("data") if isinstance(payload, dict) else None
    return [m["id"] for m in data or () if isinstance(m, dict) and isinstance(m.get("id"), str)]


class Catalog:
    """Model names per backend, cached briefly."""

    def __init__(self) -> None:
        self._cached: dict[str, tuple[float, list[str]]] = {}

    async def models(self, backends: list[Backend]) -> list[str]:
        """The names these backends offer, each once, in order."""
        found = await asyncio.gather(*(self._of(b) for b in backends if b.enabled))
        return list(dict.fromkeys(name for names in found for name in names))

    async def _of(self, backend: Backend) -> list[str]:
        if backend.model is not None:
            return [backend.model]
        cached = self._cached.get(backend.name)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        names: list[str] = []
        for way in backend.replicas or (backend,):  # a backend's replicas: the first to answer
            names = await self._fetch(way)
            if names:
                break
        ttl = TTL_S if names else FAILED_TTL_S
        self._cached[backend.name] = (time.monotonic() + ttl, names)
        return names

    async def _fetch(self, backend: Backend) -> list[str]:
        url, headers = _request(backend)
        try:
            timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, headers=headers) as response,
            ):
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                return _names(orjson.loads(await response.read()))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning(
                "listing a backend's models failed",
                extra={"backend": backend.name, "error": str(exc) or type(exc).__name__},
            )
            return []
