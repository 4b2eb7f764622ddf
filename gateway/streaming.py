"""Stream bodies: error events, assembling a streamed answer, replaying a stored one."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.sse import DONE, DONE_DATA, data_of, frame
from gateway.wire import Usage


def error_event(err: GatewayError) -> bytes:
    """An SSE event carrying an OpenAI error object (the SDKs raise it as APIError)."""
    return frame(err.json())


class Assembler:
    """Rebuilds the whole answer from `chat.completion.chunk` / text completion events."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: Any = None
        self.complete = False
        self.valid = True

    def feed(self, block: bytes) -> None:
        """Take a block of one or more complete SSE events."""
        for event in block.split(b"\n\n"):
            if event:
                self._feed_event(event)

    def _feed_event(self, event: bytes) -> None:
        data = data_of(event)
        if data is None:
            return
        if data == DONE_DATA:
            self.complete = True
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.valid = False
            return
        if not isinstance(chunk, dict) or "error" in chunk:
            self.valid = False
            return
        if not self.head:
            self.head = {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
            self.head["object"] = chunk.get("object")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for part in chunk.get("choices") or ():
            self._feed_choice(part)

    def _feed_choice(self, part: dict[str, Any]) -> None:
        index = part.get("index", 0)
        choice = self.choices.setdefault(
            index, {"index": index, "text": [], "role": None, "tools": {}, "finish_reason": None}
        )
        if part.get("finish_reason"):
            choice["finish_reason"] = part["finish_reason"]
        if "text" in part:  # legacy completions
            choice["text"].append(part.get("text") or "")
            return
        delta = part.get("delta") or {}
        if delta.get("role"):
            choice["role"] = delta["role"]
        if delta.get("content"):
            choice["text"].append(delta["content"])
        for call in delta.get("tool_calls") or ():
            slot = choice["tools"].setdefault(
                call.get("index", 0), {"id": None, "type": "function", "name": "", "args": []}
            )
            slot["id"] = call.get("id") or slot["id"]
            function = call.get("function") or {}
            slot["name"] += function.get("name") or ""
            slot["args"].append(function.get("arguments") or "")

    def body(self, usage: Usage) -> bytes | None:
        """The whole answer as JSON, with ``usage`` (a client may not have asked for it)."""
        whole = self.result()
        if whole is None:
            return None
        whole["usage"] = usage.as_json()
        return orjson.dumps(whole)

    def result(self) -> dict[str, Any] | None:
        """The answer as a non-streaming response object, or None if the stream was not whole."""
        if not (self.complete and self.valid and self.head and self.choices):
            return None
        legacy = self.head.get("object") == "text_completion"
        choices = []
        for index in sorted(self.choices):
            c = self.choices[index]
            if legacy:
                choices.append(
                    {
                        "index": index,
                        "text": "".join(c["text"]),
                        "logprobs": None,
                        "finish_reason": c["finish_reason"],
                    }
                )
                continue
            message: dict[str, Any] = {
                "role": c["role"] or "assistant",
                "content": "".join(c["text"]) if c["text"] or not c["tools"] else None,
            }
            if c["tools"]:
                message["tool_calls"] = [
                    {
                        "id": t["id"],
                        "type": "function",
                        "function": {"name": t["name"], "arguments": "".join(t["args"])},
                    }
                    for _, t in sorted(c["tools"].items())
                ]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": c["finish_reason"],
                }
            )
        out = {**self.head, "object": "text_completion" if legacy else "chat.completion"}
        out["choices"] = choices
        if self.usage:
            out["usage"] = self.usage
        return {k: v for k, v in out.items() if v is not None or k == "system_fingerprint"}


class Recorder:
    """Keeps a native stream (a door's own dialect) as it came, to be replayed as is."""

    # Events after which a recorded stream is not an answer worth keeping.
    _FAILED = (b"event: error", b"event: response.failed", b"event: response.incomplete")

    def __init__(self) -> None:
        self.blocks: list[bytes] = []
        self.valid = True

    def feed(self, block: bytes) -> None:
        """Take a block of one or more complete SSE events."""
        self.blocks.append(block)
        if any(mark in block for mark in self._FAILED):
            self.valid = False

    def body(self, usage: Usage) -> bytes | None:
        """The events as one block, or None if the stream failed."""
        return b"".join(self.blocks) if self.valid and self.blocks else None


def replay(completion: dict[str, Any], include_usage: bool) -> list[bytes]:
    """A stored non-streaming answer as SSE events, ending with `[DONE]`."""
    legacy = completion.get("object") == "text_completion"
    base = {
        "id": completion.get("id"),
        "object": "text_completion" if legacy else "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
    }
    events = []

    def emit(choices: list[dict[str, Any]], **extra: Any) -> None:
        events.append(frame(orjson.dumps({**base, "choices": choices, **extra})))

    for choice in completion.get("choices") or ():
        index = choice.get("index", 0)
        if legacy:
            emit([{"index": index, "text": choice.get("text", ""), "finish_reason": None}])
        else:
            message = choice.get("message") or {}
            delta: dict[str, Any] = {"role": message.get("role", "assistant"), "content": ""}
            emit([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])
            if message.get("content"):
                delta = {"content": message["content"]}
                emit([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])
            calls = [{**call, "index": i} for i, call in enumerate(message.get("tool_calls") or ())]
            if calls:
                delta = {"tool_calls": calls}
                emit([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])
        finish = choice.get("finish_reason")
        if legacy:
            emit([{"index": index, "text": "", "finish_reason": finish}])
        else:
            emit([{"index": index, "delta": {}, "logprobs": None, "finish_reason": finish}])
    if include_usage and completion.get("usage"):
        emit([], usage=completion["usage"])
    events.append(DONE)
    return events
