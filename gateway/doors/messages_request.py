"""Anthropic Messages requests → OpenAI chat requests (checked by `messages_checks` first)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.checks import check
from gateway.doors.messages_checks import TOOL, check_request
from gateway.errors import InvalidRequest


def _image_part(source: dict[str, Any]) -> dict[str, Any]:
    if source["type"] == "base64":
        url = f"data:{source['media_type']};base64,{source['data']}"
    else:
        url = source["url"]
    return {"type": "image_url", "image_url": {"url": url}}


def _text(blocks: str | list[dict[str, Any]]) -> str:
    if isinstance(blocks, str):
        return blocks
    return "\n".join(b["text"] for b in blocks if b.get("type") == "text")


def _tool_result(block: dict[str, Any], images: list[dict[str, Any]]) -> dict[str, Any]:
    content = block.get("content") or ""
    if isinstance(content, list):
        images.extend(_image_part(b["source"]) for b in content if b.get("type") == "image")
    text = _text(content)
    if block.get("is_error") is True:
        # Chat tool messages have no error flag; say it in the text the model reads.
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}


def _user(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        kind = block["type"]
        if kind == "tool_result":  # tool messages must follow the assistant's tool calls
            out.append(_tool_result(block, parts))
        elif kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        else:
            parts.append(_image_part(block["source"]))
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    elif parts or not out:
        out.append({"role": "user", "content": parts})
    return out


def _assistant(content: str | list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    calls = [
        {
            "id": b["id"],
            "type": "function",
            "function": {"name": b["name"], "arguments": orjson.dumps(b["input"]).decode()},
        }
        for b in content
        if b["type"] == "tool_use"
    ]
    texts = [b for b in content if b["type"] == "text"]
    message: dict[str, Any] = {"role": "assistant", "content": _text(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise InvalidRequest(
                f"'tools[{i}].type': server tools ({kind}) are not supported by this gateway.",
                param=f"tools[{i}].type",
            )
        check(tool, TOOL, f"tools[{i}].")
        function = {"name": tool["name"], "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: dict[str, Any], chat: dict[str, Any]) -> None:
    kind = choice["type"]
    if kind == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A checked Messages request as a chat completions request."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system)})
    for message in body["messages"]:
        content = message["content"]
        role = message["role"]
        if role == "user":
            messages.extend(_user(content))
        elif role == "system":  # a system turn between the others
            messages.append({"role": "system", "content": _text(content)})
        else:
            messages.append(_assistant(content))
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    for name in ("max_tokens", "temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
        if body.get("tool_choice") is not None:
            _tool_choice(body["tool_choice"], chat)
    output_format = (body.get("output_config") or {}).get("format")
    if output_format is not None:
        schema = {"name": "output", "schema": output_format["schema"]}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        chat["user"] = user
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def parse_request(body: dict[str, Any], counting: bool = False) -> dict[str, Any]:
    """Check a decoded Messages request (or a count_tokens one) and translate it."""
    check_request(body, counting)
    return to_chat(body)
