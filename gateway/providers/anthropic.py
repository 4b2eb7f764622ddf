"""Anthropic's Messages API behind the OpenAI chat completions interface."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequest, UpstreamError
from gateway.policy import Backend, Endpoint
from gateway.providers.anthropic_translate import StreamTranslator, from_anthropic, to_anthropic
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

API_VERSION = "2023-06-01"


class AnthropicProvider:
    """Translates chat completions to Messages API calls and back."""

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client

    async def _post(self, backend: Backend, payload: dict[str, Any]) -> UpstreamResponse:
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            "anthropic-version": API_VERSION,
            **backend.headers,
        }
        key = backend.api_key.get_secret_value()
        if key:
            headers["x-api-key"] = key
        return await self._client.post(
            backend.base_url + "/messages",
            orjson.dumps(payload),
            headers,
            backend=backend.name,
            connect_timeout_s=backend.connect_timeout_s,
            read_timeout_s=backend.timeout_s,
        )

    @staticmethod
    def _translate(backend: Backend, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        if endpoint != "chat":
            raise InvalidRequest(f"backend {backend.name} only serves chat completions")
        return to_anthropic(
            body, backend.model or str(body.get("model")), backend.default_max_tokens
        )

    async def complete(
        self, backend: Backend, endpoint: Endpoint, body: dict[str, Any]
    ) -> Completion:
        """Send one Messages request and return it as a chat completion."""
        response = await self._post(backend, self._translate(backend, endpoint, body))
        _, message = await read_answer(response, backend.name)
        if message.get("type") != "message":
            raise UpstreamError(f"backend {backend.name} returned an unexpected answer")
        completion, usage = from_anthropic(message)
        return Completion(orjson.dumps(completion), usage)

    async def stream(
        self, backend: Backend, endpoint: Endpoint, body: dict[str, Any], usage: Usage
    ) -> EventStream:
        """Stream a Messages answer as `chat.completion.chunk` events."""
        payload = self._translate(backend, endpoint, {**body, "stream": True})
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        translator = StreamTranslator(payload["model"], include_usage, usage)
        response = await self._post(backend, payload)
        try:
            if response.status >= 400:
                raise status_error(backend.name, response.status, await response.read())
            buffer = bytearray()
            async for chunk in response.chunks():
                for event in split_block(complete_events(buffer, chunk)):
                    for out in translator.feed(_decode(event)):
                        yield out
            if not translator.finished:
                raise UpstreamError(f"backend {backend.name} ended the stream early")
        finally:
            response.close()


def _decode(event: bytes) -> dict[str, Any]:
    """The JSON `data:` of one SSE event (empty for comments and keep-alives)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                data = orjson.loads(line[5:])
            except orjson.JSONDecodeError as exc:
                raise UpstreamError("backend sent a malformed stream event") from exc
            return data if isinstance(data, dict) else {}
    return {}
