"""Front-door dialects forwarded as is: where they go, and what is read out of the answers.

A backend that speaks a door's dialect (Anthropic's Messages, OpenAI's Responses) gets the
client's body with only the model renamed and the backend's default output limit when the
client set none. Its answer goes back untouched; only the usage is read (a whole answer's
`usage`; in a stream, the events that carry it) and, in a stream, whether the last event
came.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import UpstreamError
from gateway.sse import data_of, split_block
from gateway.wire import Native, Upstream, Usage


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one dialect's requests and answers look on the wire."""

    path: str
    # The request field that limits the answer's length.
    limit: str
    # The `type` of a whole answer.
    answer_type: str
    # Stream events that carry usage (in `usage`, `message.usage` or `response.usage`).
    with_usage: frozenset[str]
    # Stream events after which nothing more comes.
    last: frozenset[str]


DIALECTS: dict[str, Dialect] = {
    "messages": Dialect(
        "/messages",
        "max_tokens",
        "message",
        frozenset({"message_start", "message_delta"}),
        frozenset({"message_stop", "error"}),
    ),
    "responses": Dialect(
        "/responses",
        "max_output_tokens",
        "response",
        frozenset({"response.completed", "response.incomplete", "response.failed"}),
        frozenset({"response.completed", "response.incomplete", "response.failed", "error"}),
    ),
}


def prepared(upstream: Upstream, request: Native) -> tuple[str, dict[str, Any]]:
    """The path and the body to send (the backend's default limit when the client set none)."""
    dialect = DIALECTS[request.dialect]
    body = request.body
    if upstream.max_tokens is not None and body.get(dialect.limit) is None:
        body = {**body, dialect.limit: upstream.max_tokens}
    return dialect.path, body


def check_answer(upstream: Upstream, dialect: str, answer: dict[str, Any]) -> None:
    """A whole answer must be the dialect's object (a Message, a Response)."""
    if answer.get("object", answer.get("type")) != DIALECTS[dialect].answer_type:
        raise UpstreamError(f"backend {upstream.name} returned an unexpected answer")


class Watcher:
    """Reads a native stream's usage and notices its last event, touching nothing."""

    def __init__(self, dialect: str, usage: Usage) -> None:
        self.dialect = DIALECTS[dialect]
        self.usage = usage
        self.ended = False
        # Only events of these types are parsed (found by their quoted names); the rest of
        # the stream passes unread.
        self.marks = [f'"{kind}"'.encode() for kind in self.dialect.with_usage | self.dialect.last]

    def _worth_reading(self, data: bytes) -> bool:
        return any(mark in data for mark in self.marks)

    def feed(self, block: bytes) -> None:
        """Take a block of whole SSE events."""
        if not self._worth_reading(block):
            return
        for event in split_block(block):
            if self._worth_reading(event):
                self._event(event)

    def _event(self, event: bytes) -> None:
        data = data_of(event)
        try:
            parsed = orjson.loads(data) if data else None
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("backend sent a malformed stream event") from exc
        if not isinstance(parsed, dict):
            return
        kind = parsed.get("type")
        if kind in self.dialect.with_usage:
            for holder in (parsed, parsed.get("message"), parsed.get("response")):
                if isinstance(holder, dict) and "usage" in holder:
                    self.usage.update_native(holder["usage"])
        if kind in self.dialect.last:
            self.ended = True
