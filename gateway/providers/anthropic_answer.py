"""Anthropic Messages answers and stream events → OpenAI chat completions (pure translation)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.errors import UpstreamError
from gateway.sse import DONE, frame
from gateway.wire import Usage

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def usage_of(anthropic_usage: Any) -> Usage:
    """OpenAI token counts from an Anthropic usage object (cached input counts as prompt)."""
    usage = Usage()
    if isinstance(anthropic_usage, dict):
        usage.prompt_tokens = sum(
            int(anthropic_usage.get(k) or 0)
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        usage.completion_tokens = int(anthropic_usage.get("output_tokens") or 0)
    return usage


def from_anthropic(message: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    """A Messages API answer as an OpenAI chat completion."""
    text = []
    tool_calls = []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    usage = usage_of(message.get("usage"))
    completion = {
        "id": "chatcmpl-" + str(message.get("id", "")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": usage.as_json(),
    }
    return completion, usage


class StreamTranslator:
    """Turns Messages API stream events into `chat.completion.chunk` SSE events."""

    def __init__(self, model: str, include_usage: bool, usage: Usage) -> None:
        self.id = "chatcmpl-"
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage
        self.usage = usage
        self._tool_index: dict[int, int] = {}
        self.finished = False

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        return frame(orjson.dumps(chunk))

    def feed(self, event: dict[str, Any]) -> list[bytes]:
        """Translate one decoded event; raise UpstreamError on an `error` event."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = "chatcmpl-" + str(message.get("id", ""))
            self.model = message.get("model") or self.model
            start = usage_of(message.get("usage"))
            self.usage.prompt_tokens = start.prompt_tokens
            self.usage.completion_tokens = start.completion_tokens
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index.setdefault(event.get("index", 0), len(self._tool_index))
                call = {
                    "index": index,
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                index = self._tool_index.get(event.get("index", 0), 0)
                args = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk({"tool_calls": [args]})]
            return []
        if kind == "message_delta":
            output = (event.get("usage") or {}).get("output_tokens")
            if isinstance(output, int):
                self.usage.completion_tokens = output
            reason = (event.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, FINISH_REASONS.get(reason or "", "stop"))]
        if kind == "message_stop":
            self.finished = True
            out = []
            if self.include_usage:
                chunk = {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": self.usage.as_json(),
                }
                out.append(frame(orjson.dumps(chunk)))
            out.append(DONE)
            return out
        if kind == "error":
            error = event.get("error") or {}
            raise UpstreamError(f"backend stream failed: {error.get('message', 'unknown error')}")
        return []
