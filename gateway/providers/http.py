"""The upstream HTTP client: one pooled aiohttp session per worker.

The shared side-by-side benchmark measured a bare proxy at ~1.24 CPU-ms per request with
httpx's own transport, ~0.4 with httpx on aiohttp's transport and ~0.13 with aiohttp called
directly. Providers need only a POST with a JSON body and a response they can read whole or
in chunks, so this module is that and nothing more (see `docs/performance.md`).
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator, Mapping

import aiohttp

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable


class UpstreamResponse:
    """A response whose body has not been read yet; always `close()` it."""

    __slots__ = ("_backend", "_response")

    def __init__(self, response: aiohttp.ClientResponse, backend: str) -> None:
        self._response = response
        self._backend = backend

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return self._response.status

    @property
    def retry_after(self) -> str | None:
        """The `Retry-After` header, if the answer had one."""
        return self._response.headers.get("retry-after")

    async def read(self) -> bytes:
        """The whole body."""
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise map_error(exc, self._backend) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise map_error(exc, self._backend) from exc

    def close(self) -> None:
        """Give the connection back to the pool (or drop it if the body was not read)."""
        self._response.release()


def map_error(exc: BaseException, backend: str) -> UpstreamError:
    """An aiohttp failure as the gateway's upstream error."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError):
        return UpstreamUnavailable(f"backend {backend} is unreachable")
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"backend {backend} timed out")
    return UpstreamError(f"backend {backend} failed: {type(exc).__name__}")


_RESET = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}


def _stale(exc: aiohttp.ClientError) -> bool:
    """A pooled connection that was closed under us (not a refused or unreachable host)."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False
    return getattr(exc, "errno", None) in _RESET


class UpstreamClient:
    """POSTs to backends over pooled keep-alive connections."""

    # Below uvicorn's 5 s keep-alive (vLLM's server, and most Python backends): a pooled
    # connection is dropped here before the backend closes it while idle.
    def __init__(self, max_connections: int = 512, keepalive_s: float = 4.0) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running event loop, as aiohttp requires.
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=self._keepalive_s,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            # One session serves every tenant: a cookie set by a backend for one caller
            # must never ride along on another's request (and the jar costs time).
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self._session

    def _timeout(self, connect_s: float, read_s: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get((connect_s, read_s))
        if timeout is None:
            # sock_read bounds every wait for bytes, the first one included.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=read_s)
            self._timeouts[(connect_s, read_s)] = timeout
        return timeout

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        backend: str,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> UpstreamResponse:
        """Send a POST and return once the status line and headers have arrived.

        A pooled keep-alive connection the backend closed while idle fails at once with
        `ServerDisconnectedError`, or a reset, before any answer: that one is sent again,
        once, on a new connection (the backend closed it, so it never took the request).
        """
        session = self._session or self._open()
        timeout = self._timeout(connect_timeout_s, read_timeout_s)
        for attempt in (1, 2):
            try:
                response = await session.post(
                    url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt == 1 and _stale(exc):
                    continue
                raise map_error(exc, backend) from exc
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise map_error(exc, backend) from exc
            return UpstreamResponse(response, backend)
        raise AssertionError("unreachable")

    async def get(
        self, url: str, headers: Mapping[str, str], *, backend: str, timeout_s: float
    ) -> int:
        """A GET read whole within ``timeout_s`` (health checks): its status."""
        status, _ = await self.fetch(url, headers, backend=backend, timeout_s=timeout_s)
        return status

    async def fetch(
        self, url: str, headers: Mapping[str, str], *, backend: str, timeout_s: float
    ) -> tuple[int, bytes]:
        """A GET read whole within ``timeout_s`` (health checks, load polls): status and body."""
        session = self._session or self._open()
        try:
            async with (
                asyncio.timeout(timeout_s),
                session.get(url, headers=headers, allow_redirects=False) as response,
            ):
                return response.status, await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise map_error(exc, backend) from exc

    async def close(self) -> None:
        """Close every pooled connection."""
        if self._session is not None:
            await self._session.close()
