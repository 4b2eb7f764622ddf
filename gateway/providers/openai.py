"""Any OpenAI-compatible upstream: vLLM, llama.cpp, OpenAI, Gemini's OpenAI endpoint, ...

Bytes are forwarded as they come; only `usage` is read out of answers, for accounting.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from gateway.errors import UpstreamError
from gateway.policy import Backend, Endpoint
from gateway.providers.base import (
    Completion,
    EventStream,
    Usage,
    map_transport_error,
    split_events,
    status_error,
    timeout_for,
)

_PATHS: dict[str, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
_DONE = b"data: [DONE]\n\n"


class OpenAIProvider:
    """Forwards requests to an OpenAI-compatible HTTP API."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    def _request(self, backend: Backend, endpoint: Endpoint, body: dict[str, Any]) -> httpx.Request:
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            **backend.headers,
        }
        key = backend.api_key.get_secret_value()
        if key:
            headers["authorization"] = f"Bearer {key}"
        return self._client.build_request(
            "POST",
            backend.base_url + _PATHS[endpoint],
            content=orjson.dumps(body),
            headers=headers,
            timeout=timeout_for(backend),
        )

    async def complete(
        self, backend: Backend, endpoint: Endpoint, body: dict[str, Any]
    ) -> Completion:
        """Send one request and return the upstream's JSON bytes untouched."""
        try:
            response = await self._client.send(self._request(backend, endpoint, body))
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, backend.name) from exc
        if response.status_code >= 400:
            raise status_error(backend.name, response.status_code, response.content)
        content = response.content
        try:
            parsed = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"backend {backend.name} returned invalid JSON") from exc
        if not isinstance(parsed, dict):
            raise UpstreamError(f"backend {backend.name} returned an unexpected answer")
        usage = Usage()
        usage.update_from(parsed.get("usage"))
        return Completion(content, usage)

    async def stream(
        self, backend: Backend, endpoint: Endpoint, body: dict[str, Any], usage: Usage
    ) -> EventStream:
        """Forward SSE events; always asks for usage and hides it unless the client asked."""
        options = body.get("stream_options")
        client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        if not client_wants_usage:
            body = {**body, "stream_options": {**(options or {}), "include_usage": True}}
        try:
            response = await self._client.send(self._request(backend, endpoint, body), stream=True)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, backend.name) from exc
        try:
            if response.status_code >= 400:
                raise status_error(backend.name, response.status_code, await response.aread())
            buffer = bytearray()
            done = False
            try:
                async for chunk in response.aiter_raw():
                    for event in split_events(buffer, chunk):
                        if event == _DONE or event.replace(b" ", b"") == b"data:[DONE]\n\n":
                            done = True
                        elif (
                            b'"usage"' in event
                            and not _usage_is_null(event)
                            and _take_usage(event, usage)
                            and not client_wants_usage
                        ):
                            continue  # the usage-only chunk we asked for ourselves
                        yield event
            except httpx.HTTPError as exc:
                raise map_transport_error(exc, backend.name) from exc
            if not done:
                raise UpstreamError(f"backend {backend.name} ended the stream early")
        finally:
            await response.aclose()


def _usage_is_null(event: bytes) -> bool:
    return b'"usage":null' in event or b'"usage": null' in event


def _take_usage(event: bytes, usage: Usage) -> bool:
    """Record usage from an event; True when it is the usage-only chunk (no choices)."""
    try:
        data = orjson.loads(event[5:]) if event.startswith(b"data:") else None
    except orjson.JSONDecodeError:
        return False
    if not isinstance(data, dict):
        return False
    usage.update_from(data.get("usage"))
    return not data.get("choices")
