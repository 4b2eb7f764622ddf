"""OpenAI chat answers → Responses API answers: the Response object and its output items.

`shell` is the Response before any output (the request's settings echoed back), `to_response`
a whole chat completion as a Response; `responses_stream` builds the same from a stream.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.checks import as_object
from gateway.doors import new_id
from gateway.errors import UpstreamError

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def shell(body: dict[str, Any], response_id: str) -> dict[str, Any]:
    """The Response object before any output: the request's settings echoed back."""
    text = as_object(body.get("text"))
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {**text, "format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def usage_of(usage: Any) -> dict[str, Any]:
    """Responses usage from an OpenAI chat usage object."""
    usage = usage if isinstance(usage, dict) else {}
    prompt = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
    output = usage.get("completion_tokens")
    output = output if isinstance(output, int) else 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    }


def text_part(text: str) -> dict[str, Any]:
    """An `output_text` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    """An assistant message output item."""
    content = [text_part(text)] if status == "completed" else []
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    """A function call output item."""
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def finish(response: dict[str, Any], finish_reason: Any) -> None:
    """Mark a Response completed, or incomplete and why."""
    reason = _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["completed_at"] = int(time.time())


def history_message(text: str | None, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant's turn as a chat message, for the next request's history."""
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return message


def to_response(base: dict[str, Any], completion: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A chat completion as a Response, and the assistant's turn as a chat message."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else {}
    reply = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(reply, dict):
        raise UpstreamError("The backend returned an answer without a message.")
    text = reply.get("content") if isinstance(reply.get("content"), str) else None
    calls = []
    output = []
    if text or not reply.get("tool_calls"):
        output.append(message_item(new_id("msg"), text or ""))
    for each in reply.get("tool_calls") or ():
        raw = as_object(each)
        function = as_object(raw.get("function"))
        call_id = str(raw.get("id") or new_id("call"))
        name, arguments = str(function.get("name") or ""), str(function.get("arguments") or "")
        output.append(call_item(new_id("fc"), call_id, name, arguments, "completed"))
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        calls.append(call)
    response = {**base, "output": output, "usage": usage_of(completion.get("usage"))}
    response["model"] = completion.get("model") or base["model"]
    finish(response, choice.get("finish_reason"))
    return response, history_message(text, calls)
