"""The provider interface and the base every HTTP provider shares.

A provider gets an `Upstream` (URL, model, key, timeouts, headers), never the policy's
backend; `HttpProvider` builds the headers, posts, and wraps a stream's prologue (error
status) and epilogue (closing the response) so a provider only translates.
"""

from __future__ import annotations

import datetime
import email.utils
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any, ClassVar, Protocol

import orjson

from gateway.errors import UpstreamError, UpstreamStatusError
from gateway.providers import native
from gateway.providers.http import UpstreamClient, UpstreamResponse
from gateway.sse import complete_events
from gateway.wire import Completion, Endpoint, EventStream, Native, Upstream, Usage


class Provider(Protocol):
    """A family of upstream APIs (OpenAI-compatible, Anthropic, ...)."""

    async def complete(
        self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any]
    ) -> Completion:
        """Send one request and return the whole answer."""
        ...

    def stream(
        self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any], usage: Usage
    ) -> EventStream:
        """Send one streaming request; the first `anext` raises if the backend fails."""
        ...

    def speaks(self, upstream: Upstream, dialect: str) -> bool:
        """Whether this backend takes a front door's own dialect as is (`Native`)."""
        ...

    async def complete_native(self, upstream: Upstream, request: Native) -> Completion:
        """Forward a request in a dialect it speaks; the answer as the backend gave it."""
        ...

    def stream_native(self, upstream: Upstream, request: Native, usage: Usage) -> EventStream:
        """Forward a streaming request in a dialect it speaks; its events as they come."""
        ...

    async def check(self, upstream: Upstream, path: str, timeout_s: float) -> None:
        """An active health check (GET ``path``); raise UpstreamError if it fails."""
        ...


def status_error(
    backend: str, status: int, body: bytes, retry_after: str | None = None
) -> UpstreamStatusError:
    """The error for a non-2xx answer from a backend (with its `Retry-After`, as seconds)."""
    return UpstreamStatusError(
        f"backend {backend} answered HTTP {status}",
        upstream_status=status,
        body=body[:65536],
        retry_after_s=retry_after_seconds(retry_after),
    )


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A `Retry-After` header's delay in seconds (RFC 9110: seconds or an HTTP date).

    A date is counted from ``now`` (epoch seconds; the clock when None); a date already past
    is 0. None when absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until(text, time.time() if now is None else now)
    return seconds if 0 <= seconds < float("inf") else None


def _seconds_until(date: str, now: float) -> float | None:
    """Seconds from ``now`` to an HTTP date (IMF-fixdate, or the obsolete RFC 850 / asctime)."""
    try:
        when = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime has no zone: HTTP dates are always GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(when.timestamp() - now, 0.0)


class HttpProvider:
    """Headers, posting and stream framing for providers that speak JSON over HTTP."""

    # Sent on every request of this provider family.
    family_headers: ClassVar[dict[str, str]] = {}

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client

    def auth_headers(self, key: str) -> dict[str, str]:
        """How this family presents an API key (a bearer token unless overridden)."""
        return {"authorization": f"Bearer {key}"}

    def _headers(self, upstream: Upstream) -> dict[str, str]:
        headers = {"accept-encoding": "identity", **self.family_headers, **upstream.headers}
        if upstream.api_key:
            headers.update(self.auth_headers(upstream.api_key))
        return headers

    def speaks(self, upstream: Upstream, dialect: str) -> bool:
        """A dialect the backend was declared to speak (the policy's `responses: native`)."""
        return dialect in upstream.dialects

    async def complete_native(self, upstream: Upstream, request: Native) -> Completion:
        """Forward the door's body; the answer's bytes untouched, its `usage` read."""
        path, payload = native.prepared(upstream, request)
        content, parsed = await self.answer(upstream, path, payload, request.headers)
        native.check_answer(upstream, request.dialect, parsed)
        usage = Usage()
        usage.update_native(parsed.get("usage"))
        return Completion(content, usage, request.dialect)

    async def stream_native(self, upstream: Upstream, request: Native, usage: Usage) -> EventStream:
        """Forward the door's streaming body; its events as they come, usage read on the way."""
        path, payload = native.prepared(upstream, request)
        watcher = native.Watcher(request.dialect, usage)
        async with aclosing(self.blocks(upstream, path, payload, request.headers)) as blocks:
            async for block in blocks:
                watcher.feed(block)
                yield block
        if not watcher.ended:
            raise ended_early(upstream)

    async def post(
        self, upstream: Upstream, path: str, payload: Any, extra: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        """POST a JSON payload to ``upstream.base_url + path`` (with ``extra`` headers)."""
        headers = {"content-type": "application/json", **self._headers(upstream), **(extra or {})}
        return await self._client.post(
            upstream.base_url + path,
            orjson.dumps(payload),
            headers,
            backend=upstream.name,
            connect_timeout_s=upstream.connect_timeout_s,
            read_timeout_s=upstream.read_timeout_s,
        )

    async def check(self, upstream: Upstream, path: str, timeout_s: float) -> None:
        """GET ``upstream.base_url + path``; anything but a 2xx within ``timeout_s`` fails."""
        url = upstream.base_url + path
        headers = self._headers(upstream)
        status = await self._client.get(url, headers, backend=upstream.name, timeout_s=timeout_s)
        if not 200 <= status < 300:
            raise status_error(upstream.name, status, b"")

    async def answer(
        self, upstream: Upstream, path: str, payload: Any, extra: Mapping[str, str] | None = None
    ) -> tuple[bytes, dict[str, Any]]:
        """A whole answer as bytes and as a JSON object; raise on an error status or bad JSON."""
        response = await self.post(upstream, path, payload, extra)
        try:
            content = await response.read()
        finally:
            response.close()
        if response.status >= 400:
            raise status_error(upstream.name, response.status, content, response.retry_after)
        try:
            parsed = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"backend {upstream.name} returned invalid JSON") from exc
        if not isinstance(parsed, dict):
            raise UpstreamError(f"backend {upstream.name} returned an unexpected answer")
        return content, parsed

    async def blocks(
        self, upstream: Upstream, path: str, payload: Any, extra: Mapping[str, str] | None = None
    ) -> AsyncGenerator[bytes, None]:
        """POST a streaming request; yield blocks of whole SSE events; always close."""
        response = await self.post(upstream, path, payload, extra)
        try:
            if response.status >= 400:
                content = await response.read()
                raise status_error(upstream.name, response.status, content, response.retry_after)
            buffer = bytearray()
            async for chunk in response.chunks():
                block = complete_events(buffer, chunk)
                if block:
                    yield block
        finally:
            response.close()


def ended_early(upstream: Upstream) -> UpstreamError:
    """The error for a stream that stopped before its last event."""
    return UpstreamError(f"backend {upstream.name} ended the stream early")
