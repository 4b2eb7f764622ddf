"""Answers a backend gave in the door's own dialect: relayed as is, and what a door keeps.

A backend that speaks the door's dialect answers in it (a Message, a Response, or their
events); the door sends that on untouched. The one thing it rewrites is the pipeline's own
error event (OpenAI's shape, sent when a stream breaks after its first event), which goes
out in the door's dialect. The Responses door also reads what it stores from the answer:
the Response, and its output as the next turn's items and chat history.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import orjson

from gateway.checks import as_object
from gateway.doors.responses_answer import history_message
from gateway.sse import data_of, split_block

# How the pipeline's own error event starts (`gateway.streaming.error_event`).
_GATEWAY_ERROR = b'data: {"error"'
# The Responses stream events that carry the finished Response.
_FINISHED = (b"response.completed", b"response.incomplete")


def gateway_error(block: bytes) -> Any:
    """The error object of the pipeline's own error event; None for any other block."""
    if not block.startswith(_GATEWAY_ERROR):
        return None
    try:
        parsed = orjson.loads(data_of(block) or b"{}")
    except orjson.JSONDecodeError:
        return {}
    return as_object(parsed).get("error") or {}


async def relay(
    blocks: AsyncGenerator[bytes, None],
    error_event: Callable[[Any], bytes],
    before: Callable[[bytes], Awaitable[None]] | None = None,
) -> AsyncGenerator[bytes, None]:
    """A native stream's blocks as they came; ``before`` sees each one before it is sent."""
    try:
        async for block in blocks:
            error = gateway_error(block)
            if error is not None:
                yield error_event(error)
                continue
            if before is not None:
                await before(block)
            yield block
    finally:
        await blocks.aclose()


def finished_response(block: bytes) -> dict[str, Any] | None:
    """The Response a `response.completed` (or `.incomplete`) event in ``block`` carries."""
    if not any(mark in block for mark in _FINISHED):
        return None
    for event in split_block(block):
        data = data_of(event)
        if data is None or not any(mark in data for mark in _FINISHED):
            continue
        try:
            parsed = as_object(orjson.loads(data))
        except orjson.JSONDecodeError:
            continue
        response = parsed.get("response")
        if parsed.get("type") in ("response.completed", "response.incomplete"):
            return response if isinstance(response, dict) else None
    return None


def input_items(given: Any) -> list[dict[str, Any]]:
    """A request's `input` as a list of items (a string is one user message)."""
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return [item for item in given if isinstance(item, dict)] if isinstance(given, list) else []


def output_items(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A Response's output items, fit to be sent back as input (reasoning items left out)."""
    output = response.get("output")
    items = output if isinstance(output, list) else []
    return [i for i in items if isinstance(i, dict) and i.get("type") != "reasoning"]


def history_of(response: dict[str, Any]) -> dict[str, Any]:
    """A Response's output as the assistant's chat turn (for a translated follow-up)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in output_items(response):
        if item.get("type") == "message":
            for part in item.get("content") or ():
                text = as_object(part).get("text")
                texts.append(text if isinstance(text, str) else "")
        elif item.get("type") == "function_call":
            function = {"name": item.get("name"), "arguments": item.get("arguments")}
            calls.append({"id": item.get("call_id"), "type": "function", "function": function})
    return history_message("".join(texts) or None, calls)
