"""Anthropic's Messages API behind the OpenAI chat completions interface.

A request that came in through the Messages door is forwarded as is instead
(`HttpProvider.complete_native`): no translation either way.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, ClassVar

import orjson

from gateway.errors import InvalidRequest, UpstreamError
from gateway.providers.anthropic_answer import StreamTranslator, from_anthropic
from gateway.providers.anthropic_request import to_anthropic
from gateway.providers.base import HttpProvider, ended_early
from gateway.sse import data_of, split_block
from gateway.wire import Completion, Endpoint, EventStream, Upstream, Usage, wants_usage

API_VERSION = "2023-06-01"


class AnthropicProvider(HttpProvider):
    """Translates chat completions to Messages API calls and back."""

    family_headers: ClassVar[dict[str, str]] = {"anthropic-version": API_VERSION}

    def auth_headers(self, key: str) -> dict[str, str]:
        """Anthropic takes its key in `x-api-key`."""
        return {"x-api-key": key}

    def speaks(self, upstream: Upstream, dialect: str) -> bool:
        """The Messages API, always."""
        return dialect == "messages"

    @staticmethod
    def _translate(upstream: Upstream, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        if endpoint != "chat":
            raise InvalidRequest(f"backend {upstream.name} only serves chat completions")
        model = upstream.model or str(body.get("model"))
        return to_anthropic(body, model, upstream.default_max_tokens)

    async def complete(
        self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any]
    ) -> Completion:
        """Send one Messages request and return it as a chat completion."""
        payload = self._translate(upstream, endpoint, body)
        _, message = await self.answer(upstream, "/messages", payload)
        if message.get("type") != "message":
            raise UpstreamError(f"backend {upstream.name} returned an unexpected answer")
        completion, usage = from_anthropic(message)
        return Completion(orjson.dumps(completion), usage)

    async def stream(
        self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any], usage: Usage
    ) -> EventStream:
        """Stream a Messages answer as `chat.completion.chunk` events."""
        payload = self._translate(upstream, endpoint, {**body, "stream": True})
        translator = StreamTranslator(payload["model"], wants_usage(body), usage)
        async with aclosing(self.blocks(upstream, "/messages", payload)) as blocks:
            async for block in blocks:
                for event in split_block(block):
                    for out in translator.feed(_decode(event)):
                        yield out
        if not translator.finished:
            raise ended_early(upstream)


def _decode(event: bytes) -> dict[str, Any]:
    """The JSON `data:` of one SSE event (empty for comments and keep-alives)."""
    data = data_of(event)
    if data is None:
        return {}
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("backend sent a malformed stream event") from exc
    return parsed if isinstance(parsed, dict) else {}
