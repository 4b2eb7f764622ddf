"""OpenAI chat answers → Anthropic Messages answers: a whole Message, or its stream events.

A stream becomes `message_start`, `ping`, then per content block `content_block_start`,
`content_block_delta` (`text_delta` or `input_json_delta`) and `content_block_stop`, then
`message_delta` (stop reason, usage) and `message_stop`; a failure on the way is an `error`
event, as Anthropic sends it.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.checks import as_object
from gateway.doors import new_id
from gateway.errors import UpstreamError
from gateway.sse import DONE_DATA, data_of

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# OpenAI error types that Anthropic's dialect names the same way; any other is api_error.
_SAME_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
    }
)


def message_id(chat_id: Any) -> str:
    """A Message id from a chat completion's id (a fresh one when it had none)."""
    if isinstance(chat_id, str) and chat_id:
        return "msg_" + chat_id.removeprefix("chatcmpl-")
    return new_id("msg")


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the object `tool_use.input` must be."""
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _stop(choice: dict[str, Any], stops: list[str]) -> tuple[str, str | None]:
    reason = STOP_REASONS.get(choice.get("finish_reason") or "", "end_turn")
    # vLLM says which stop string ended the answer; others do not.
    matched = choice.get("stop_reason")
    if reason == "end_turn" and isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    return reason, None


def usage_of(usage: Any) -> dict[str, int]:
    """Anthropic usage from an OpenAI usage object."""
    usage = usage if isinstance(usage, dict) else {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return {
        "input_tokens": prompt if isinstance(prompt, int) else 0,
        "output_tokens": completion if isinstance(completion, int) else 0,
    }


def to_message(completion: Any, model: str, stops: list[str]) -> dict[str, Any]:
    """A chat completion as a Messages API answer."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    choice = as_object(choices[0] if isinstance(choices, list) and choices else None)
    reply = choice.get("message")
    if not isinstance(reply, dict):
        raise UpstreamError("The backend returned an answer without a message.")
    content: list[dict[str, Any]] = []
    text = reply.get("content")
    raw_calls = reply.get("tool_calls")
    calls = [as_object(c) for c in raw_calls] if isinstance(raw_calls, list) else []
    if isinstance(text, str) and (text or not calls):
        content.append({"type": "text", "text": text})
    for call in calls:
        function = as_object(call.get("function"))
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or new_id("toolu"),
                "name": str(function.get("name") or ""),
                "input": tool_input(function.get("arguments")),
            }
        )
    reason, sequence = _stop(choice, stops)
    return {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_of(completion.get("usage")),
    }


def event(kind: str, data: dict[str, Any]) -> bytes:
    """One named SSE event, as Anthropic frames them."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def error_event(error: Any) -> bytes:
    """An `error` event from an OpenAI error object."""
    error = error if isinstance(error, dict) else {}
    kind = error.get("type")
    message = error.get("message")
    return event(
        "error",
        {
            "error": {
                "type": kind if kind in _SAME_TYPES else "api_error",
                "message": message if isinstance(message, str) else "The stream failed.",
            }
        },
    )


class MessageStream:
    """Turns `chat.completion.chunk` events into Messages API stream events."""

    def __init__(self, model: str, stops: list[str]) -> None:
        self.model = model
        self.stops = stops
        self.started = False
        self.finished = False
        self.index = -1
        self.open: str | None = None  # "text", or the tool call index as a string
        self.stop_reason = "end_turn"
        self.stop_sequence: str | None = None
        self.usage = {"input_tokens": 0, "output_tokens": 0}

    def feed(self, block: bytes) -> list[bytes]:
        """Translate a block of whole SSE events."""
        out: list[bytes] = []
        for raw in block.split(b"\n\n"):
            data = data_of(raw) if raw else None
            if data is None or self.finished:
                continue
            if data == DONE_DATA:
                out += self._finish()
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = {"error": {"message": "The backend sent a malformed stream event."}}
            if not isinstance(chunk, dict) or "error" in chunk:
                self.finished = True
                out.append(error_event(chunk.get("error") if isinstance(chunk, dict) else None))
                continue
            out += self._chunk(chunk)
        return out

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        self.started = True
        message: dict[str, Any] = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": dict(self.usage),
        }
        return [event("message_start", {"message": message}), event("ping", {})]

    def _chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        out = [] if self.started else self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage_of(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = as_object(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                out += self._open("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self.stop_reason, self.stop_sequence = _stop(choice, self.stops)
        return out

    def _tool_call(self, call: Any) -> list[bytes]:
        if not isinstance(call, dict):
            return []
        out: list[bytes] = []
        key = str(call.get("index", 0))
        function = as_object(call.get("function"))
        if self.open != key:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or new_id("toolu"),
                "name": str(function.get("name") or ""),
                "input": {},
            }
            out += self._open(key, block)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return out

    def _open(self, key: str, block: dict[str, Any]) -> list[bytes]:
        if self.open == key:
            return []
        out = self._close()
        self.index += 1
        self.open = key
        out.append(event("content_block_start", {"index": self.index, "content_block": block}))
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"index": self.index, "delta": delta})

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [event("content_block_stop", {"index": self.index})]

    def _finish(self) -> list[bytes]:
        out = [] if self.started else self._start({})
        out += self._close()
        self.finished = True
        delta = {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence}
        out.append(event("message_delta", {"delta": delta, "usage": self.usage}))
        out.append(event("message_stop", {}))
        return out

    def unfinished(self) -> list[bytes]:
        """What to send when the stream ended without its last event."""
        if self.finished:
            return []
        self.finished = True
        return [error_event({"message": "The backend ended the stream early."})]
