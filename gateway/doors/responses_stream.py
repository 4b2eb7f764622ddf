"""OpenAI chat streams → Responses API event streams.

A stream is `response.created`, `response.in_progress`, then per output item
`response.output_item.added`, for a message `response.content_part.added`,
`response.output_text.delta`… `.done`, `response.content_part.done`, for a function call
`response.function_call_arguments.delta`… `.done`, then `response.output_item.done`; it ends
with `response.completed` (or `response.incomplete` when cut by `max_output_tokens`) carrying
usage, or `error` and `response.failed`. Every event has a `sequence_number`.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.checks import as_object
from gateway.doors import new_id
from gateway.doors.responses_answer import (
    call_item,
    finish,
    history_message,
    message_item,
    text_part,
    usage_of,
)
from gateway.sse import DONE_DATA, data_of


def event(kind: str, sequence: int, data: dict[str, Any]) -> bytes:
    """One named SSE event of a Responses stream."""
    payload = orjson.dumps({"type": kind, "sequence_number": sequence, **data})
    return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


class ResponseStream:
    """Turns `chat.completion.chunk` events into Responses stream events."""

    def __init__(self, base: dict[str, Any]) -> None:
        self.response = base
        self.sequence = 0
        self.started = False
        self.done = False
        self.error: str | None = None
        self.item: dict[str, Any] | None = None  # the open output item
        self.key: str | None = None  # "text", or the open tool call's index
        self.text: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.finish_reason: Any = None
        self.usage: Any = None

    def _event(self, kind: str, **data: Any) -> bytes:
        out = event(kind, self.sequence, data)
        self.sequence += 1
        return out

    def feed(self, block: bytes) -> list[bytes]:
        """Translate a block of whole SSE events (the terminal event comes from `end`)."""
        out: list[bytes] = []
        for raw in block.split(b"\n\n"):
            data = data_of(raw) if raw else None
            if data is None or self.done:
                continue
            if data == DONE_DATA:
                out += [] if self.started else self._start()
                out += self._close()
                self.done = True
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = {"error": {"message": "The backend sent a malformed stream event."}}
            if not self.started:  # named by the model that answers, as every later event
                out += self._start(chunk.get("model") if isinstance(chunk, dict) else None)
            if not isinstance(chunk, dict) or "error" in chunk:
                error = chunk.get("error") if isinstance(chunk, dict) else None
                message = error.get("message") if isinstance(error, dict) else None
                out += self._fail(message if isinstance(message, str) else "The stream failed.")
                continue
            out += self._chunk(chunk)
        return out

    def _start(self, model: Any = None) -> list[bytes]:
        self.started = True
        response = self.response
        if isinstance(model, str) and model:
            response["model"] = model
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("model"), str):
            self.response["model"] = chunk["model"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = as_object(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                out += self._open_text()
                self.text.append(text)
                assert self.item is not None
                out.append(
                    self._event(
                        "response.output_text.delta",
                        item_id=self.item["id"],
                        output_index=len(self.response["output"]),
                        content_index=0,
                        delta=text,
                        logprobs=[],
                    )
                )
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out += self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _open_text(self) -> list[bytes]:
        if self.key == "text":
            return []
        out = self._close()
        self.key, self.item, self.text = "text", message_item(new_id("msg"), "", "in_progress"), []
        index = len(self.response["output"])
        out.append(self._event("response.output_item.added", output_index=index, item=self.item))
        out.append(
            self._event(
                "response.content_part.added",
                item_id=self.item["id"],
                output_index=index,
                content_index=0,
                part=text_part(""),
            )
        )
        return out

    def _tool_call(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        key = str(call.get("index", 0))
        function = as_object(call.get("function"))
        index = len(self.response["output"])
        if self.key != key:
            out += self._close()
            index = len(self.response["output"])
            call_id = str(call.get("id") or new_id("call"))
            name = str(function.get("name") or "")
            self.key, self.item = key, call_item(new_id("fc"), call_id, name, "", "in_progress")
            out.append(
                self._event("response.output_item.added", output_index=index, item=self.item)
            )
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments and self.item is not None:
            self.item["arguments"] += arguments
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=self.item["id"],
                    output_index=index,
                    delta=arguments,
                )
            )
        return out

    def _close(self) -> list[bytes]:
        item, index = self.item, len(self.response["output"])
        if item is None:
            return []
        self.item = self.key = None
        out: list[bytes] = []
        if item["type"] == "message":
            text = "".join(self.text)
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out.append(self._event("response.output_text.done", **where, text=text, logprobs=[]))
            out.append(self._event("response.content_part.done", **where, part=text_part(text)))
            item = message_item(item["id"], text)
        else:
            item = {**item, "status": "completed"}
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
            function = {"name": item["name"], "arguments": item["arguments"]}
            self.calls.append({"id": item["call_id"], "type": "function", "function": function})
        self.response["output"].append(item)
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _fail(self, message: str) -> list[bytes]:
        self.done = True
        self.error = message
        return [self._event("error", code="server_error", message=message, param=None)]

    def end(self) -> tuple[bytes, dict[str, Any] | None]:
        """The terminal event, and the assistant's turn as a chat message (None: failed)."""
        out = b"".join(self._start()) if not self.started else b""
        if not self.done:
            out += b"".join(self._fail("The backend ended the stream early."))
        response = self.response
        if self.error is not None:
            response["status"] = "failed"
            response["error"] = {"code": "server_error", "message": self.error}
            return out + self._event("response.failed", response=response), None
        response["usage"] = usage_of(self.usage)
        finish(response, self.finish_reason)
        kind = f"response.{response['status']}"
        texts = [
            part["text"]
            for item in response["output"]
            if item["type"] == "message"
            for part in item["content"]
        ]
        message = history_message("".join(texts) or None, self.calls)
        return out + self._event(kind, response=response), message
