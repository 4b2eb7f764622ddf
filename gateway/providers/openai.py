"""Any OpenAI-compatible upstream: vLLM, llama.cpp, OpenAI, Gemini's OpenAI endpoint, ...

Bytes are forwarded as they come; only `usage` is read out of answers, for accounting. A
backend with `tool_call_prefill` gets required tool calls begun for it (forced_call.py).
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import orjson

from gateway.providers.base import HttpProvider, ended_early
from gateway.providers.forced_call import force_tool_call
from gateway.sse import DONE_DATA, data_of, split_block
from gateway.wire import Completion, Endpoint, EventStream, Upstream, Usage, wants_usage

_PATHS: dict[str, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
# `data: [DONE]` or `data:[DONE]`, then the blank line; a suffix test copies nothing.
_DONE_TAIL = DONE_DATA + b"\n\n"


class OpenAIProvider(HttpProvider):
    """Forwards requests to an OpenAI-compatible HTTP API."""

    async def complete(
        self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any]
    ) -> Completion:
        """Send one request and return the upstream's JSON bytes untouched."""
        content, parsed = await self.answer(upstream, _PATHS[endpoint], _outgoing(upstream, body))
        usage = Usage()
        usage.update_from(parsed.get("usage"))
        return Completion(content, usage)

    async def stream(
        self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any], usage: Usage
    ) -> EventStream:
        """Forward SSE events; always asks for usage and hides it unless the client asked."""
        body = _outgoing(upstream, body)
        client_wants_usage = wants_usage(body)
        if not client_wants_usage:
            options = body.get("stream_options")
            options = options if isinstance(options, dict) else {}
            body = {**body, "stream_options": {**options, "include_usage": True}}
        done = False
        async with aclosing(self.blocks(upstream, _PATHS[endpoint], body)) as blocks:
            async for received in blocks:
                block = received
                if _has_usage(block):
                    # Rare (usually the last block): parse only the events carrying usage.
                    kept = []
                    for event in split_block(block):
                        only_usage = _has_usage(event) and _take_usage(event, usage)
                        if only_usage and not client_wants_usage:
                            continue  # the usage-only chunk we asked for ourselves
                        kept.append(event)
                    block = b"".join(kept)
                if block.endswith(_DONE_TAIL):
                    done = True
                if block:
                    yield block
        if not done:
            raise ended_early(upstream)


def _has_usage(block: bytes) -> bool:
    """Whether a block carries a non-null `usage` (OpenAI sends `"usage":null` on every chunk)."""
    total = block.count(b'"usage"')
    return total > 0 and total > block.count(b'"usage":null') + block.count(b'"usage": null')


def _take_usage(event: bytes, usage: Usage) -> bool:
    """Record usage from an event; True when it is the usage-only chunk (no choices)."""
    data = data_of(event)
    try:
        parsed = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        return False
    if not isinstance(parsed, dict):
        return False
    usage.update_from(parsed.get("usage"))
    return not parsed.get("choices")


def _outgoing(upstream: Upstream, body: dict[str, Any]) -> dict[str, Any]:
    """The body with the backend's default `max_tokens` when the client set no limit (and a
    required tool call begun, on a backend that needs it)."""
    body = force_tool_call(upstream.tool_call_prefill, body)
    if upstream.max_tokens is None or "max_tokens" in body or "max_completion_tokens" in body:
        return body
    return {**body, "max_tokens": upstream.max_tokens}
