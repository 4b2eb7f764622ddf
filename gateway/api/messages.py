"""Anthropic's Messages API as a front door: POST /v1/messages and /v1/messages/count_tokens.

The request is checked and translated into a chat body (`gateway.doors.messages_request`),
routed by the same pipeline as chat (classifier, policy, cache, limits, metrics under the
endpoint label `messages`), and the chat answer is rendered back as a Message or its event
stream (`gateway.doors.messages_answer`). The body as the client sent it goes along: an
Anthropic backend gets it as is (model renamed, `anthropic-beta` passed on) and its answer
comes back untouched (`gateway.doors.native`). Errors have Anthropic's shape. The key comes in
`x-api-key` (Anthropic's SDK) or `Authorization: Bearer`; `anthropic-version` is accepted.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.api.asgi import Reply, RequestHead, read_body, read_head
from gateway.api.deps import ServicesDep
from gateway.api.door import EVENT_STREAM
from gateway.auth import Tenant
from gateway.doors import native
from gateway.doors.messages_answer import MessageStream, error_event, to_message
from gateway.doors.messages_checks import REQUEST
from gateway.doors.messages_request import parse_request
from gateway.errors import Dialect, UpstreamError
from gateway.pipeline import Answer, BodyParser
from gateway.planning import resolve_model
from gateway.protocol import parse_body
from gateway.services import Services
from gateway.wire import Native

router = APIRouter()

# Rough, tokenizer-free: ~4 characters a token, a few tokens per turn, images at a flat rate.
_CHARS_PER_TOKEN = 4
_PER_MESSAGE = 3
_PER_IMAGE = 1_000


def authorization(head: RequestHead) -> str | None:
    """`x-api-key` as a bearer token, else the `Authorization` header."""
    return f"Bearer {head.api_key}" if head.api_key else head.authorization


class MessagesExchange:
    """One Messages request: remembers what the answer needs (model, stop sequences)."""

    door: str | None = "messages"
    dialect: Dialect = "anthropic"

    def __init__(self, services: Services, request_id: str, head: RequestHead) -> None:
        self.model = ""
        self.stops: list[str] = []
        beta = head.anthropic_beta
        self.headers = {"anthropic-beta": beta} if beta else {}

    @property
    def parse(self) -> BodyParser:
        """The Messages body → the chat body."""
        return self._parse

    async def _parse(self, raw: bytes, tenant: Tenant) -> tuple[dict[str, Any], Native]:
        body = parse_body(raw)
        # Fields the door does not know go to an Anthropic backend only (a 400 elsewhere).
        unknown = [name for name in body if name not in REQUEST]
        chat = parse_request({k: v for k, v in body.items() if k in REQUEST} if unknown else body)
        self.model = chat["model"]
        self.stops = list(body.get("stop_sequences") or ())
        first = unknown[0] if unknown else None
        return chat, Native("messages", body, self.headers, first)

    def authorization(self, head: RequestHead) -> str | None:
        """`x-api-key`, or a bearer token."""
        return authorization(head)

    async def reply(self, answer: Answer) -> Reply:
        """A Message, or its event stream."""
        if answer.dialect == "messages":  # an Anthropic backend's own answer
            if answer.events is None:
                return Reply(200, answer.headers, answer.body)
            stream = native.relay(answer.events, error_event)
            return Reply(200, answer.headers, media_type=EVENT_STREAM, stream=stream)
        if answer.events is None:
            try:
                completion = orjson.loads(answer.body)
            except orjson.JSONDecodeError as exc:
                raise UpstreamError("The backend returned an answer that is not JSON.") from exc
            message = to_message(completion, self.model, self.stops)
            return Reply(200, answer.headers, orjson.dumps(message))
        events = self._events(answer.events)
        return Reply(200, answer.headers, media_type=EVENT_STREAM, stream=events)

    async def _events(self, blocks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        stream = MessageStream(self.model, self.stops)
        try:
            async for block in blocks:
                out = stream.feed(block)
                if out:
                    yield b"".join(out)
            tail = stream.unfinished()
            if tail:
                yield b"".join(tail)
        finally:
            await blocks.aclose()


def estimate_tokens(chat: dict[str, Any]) -> int:
    """An estimate of a request's input tokens (no tokenizer: the backends' differ)."""
    chars = 0
    tokens = 0
    for message in chat["messages"]:
        tokens += _PER_MESSAGE
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        for part in content if isinstance(content, list) else ():
            if part.get("type") == "text":
                chars += len(part["text"])
            else:
                tokens += _PER_IMAGE
        for call in message.get("tool_calls") or ():
            chars += len(call["function"]["name"]) + len(call["function"]["arguments"])
    if chat.get("tools"):
        chars += len(orjson.dumps(chat["tools"]))
    return tokens + math.ceil(chars / _CHARS_PER_TOKEN)


@router.post("/v1/messages/count_tokens")
@router.post("/messages/count_tokens")
async def count_tokens(services: ServicesDep, request: Request) -> Response:
    """`{"input_tokens": n}`: an estimate, for a model the caller may use."""
    head = read_head(request.scope)
    tenant = services.state.keys.authenticate(authorization(head))
    raw = await read_body(request.receive, head, services.settings.max_body_bytes)
    chat = parse_request(parse_body(raw), counting=True)
    resolve_model(services.state.loaded.policy, chat["model"], tenant.allowed_models)
    body = orjson.dumps({"input_tokens": estimate_tokens(chat)})
    return Response(body, media_type="application/json")
