"""Any OpenAI-compatible upstream: vLLM, llama.cpp, OpenAI, Gemini's OpenAI endpoint, ...

Bytes are forwarded as they come; only `usage` is read out of answers, for accounting.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import UpstreamError
from gateway.policy import Backend, Endpoint
from gateway.providers.base import (
    Completion,
    EventStream,
    Usage,
    complete_events,
    read_answer,
    split_block,
    status_error,
)
from gateway.providers.http import UpstreamClient, UpstreamResponse

_PATHS: dict[str, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}


class OpenAIProvider:
    """Forwards requests to an OpenAI-compatible HTTP API."""

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client

    async def _post(
        self, backend: Backend, endpoint: Endpoint, body: dict[str, Any]
    ) -> UpstreamResponse:
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            **backend.headers,
        }
        key = backend.api_key.get_secret_value()
        if key:
            headers["authorization"] = f"Bearer {key}"
        return await self._client.post(
            backend.base_url + _PATHS[endpoint],
            orjson.dumps(body),
            headers,
            backend=backend.name,
            connect_timeout_s=backend.connect_timeout_s,
            read_timeout_s=backend.timeout_s,
        )

    async def complete(
        self, backend: Backend, endpoint: Endpoint, body: dict[str, Any]
    ) -> Completion:
        """Send one request and return the upstream's JSON bytes untouched."""
        response = await self._post(backend, endpoint, body)
        content, parsed = await read_answer(response, backend.name)
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
        response = await self._post(backend, endpoint, body)
        try:
            if response.status >= 400:
                raise status_error(backend.name, response.status, await response.read())
            buffer = bytearray()
            done = False
            async for chunk in response.chunks():
                block = complete_events(buffer, chunk)
                if not block:
                    continue
                if _has_usage(block):
                    # Rare (usually the last block): parse only the events carrying usage.
                    kept = []
                    for event in split_block(block):
                        only_usage = _has_usage(event) and _take_usage(event, usage)
                        if only_usage and not client_wants_usage:
                            continue  # the usage-only chunk we asked for ourselves
                        kept.append(event)
                    block = b"".join(kept)
                # `data: [DONE]` or `data:[DONE]`; a plain suffix test copies nothing.
                if block.endswith(b"[DONE]\n\n"):
                    done = True
                if block:
                    yield block
            if not done:
                raise UpstreamError(f"backend {backend.name} ended the stream early")
        finally:
            response.close()


def _has_usage(block: bytes) -> bool:
    """Whether a block carries a non-null `usage` (OpenAI sends `"usage":null` on every chunk)."""
    total = block.count(b'"usage"')
    return total > 0 and total > block.count(b'"usage":null') + block.count(b'"usage": null')


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
