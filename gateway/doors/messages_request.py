"""Anthropic Messages requests → OpenAI chat requests: checks from tables, then translation.

Translated: `model`, `messages` (text, image, tool_use, tool_result blocks), `system`,
`max_tokens`, `stop_sequences`, `temperature`, `top_p`, `top_k`, `tools`, `tool_choice`,
`output_config.format` (→ `response_format`), `metadata.user_id`, `stream`. Accepted and
dropped, as they do not change what the model is asked (documented in docs/architecture.md):
`thinking` and `output_config.effort` (the answer has no thinking blocks), `cache_control`
(top level and on blocks), `service_tier`, `speed`, `inference_geo`, `diagnostics`,
`context_management`, `user_profile_id`, `workspace_id`, and thinking blocks in earlier
assistant turns. Any other top-level field (server tools and `container` included) is a 400,
as Anthropic's API answers.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.protocol import (
    MODEL,
    Rule,
    check,
    check_known,
    integer,
    is_bool,
    is_nonempty_str,
    is_object,
    is_objects,
    is_str,
    is_strs,
    number,
    one_of,
)


def _is_system(value: Any) -> bool:
    return isinstance(value, str) or (
        is_objects(value) and all(b.get("type") == "text" and is_str(b.get("text")) for b in value)
    )


def _is_content(value: Any) -> bool:
    return isinstance(value, str) or is_objects(value)


def _is_tool_choice(value: Any) -> bool:
    return is_object(value) and value.get("type") in ("auto", "any", "tool", "none")


REQUEST = {
    "model": MODEL,
    "messages": Rule(lambda v: is_objects(v) and bool(v), "a non-empty list of messages", True),
    "max_tokens": integer(1, required=True),
    "system": Rule(_is_system, "a string or a list of text blocks"),
    "metadata": Rule(is_object, "an object"),
    "stop_sequences": Rule(is_strs, "a list of strings"),
    "stream": Rule(is_bool, "a boolean"),
    "temperature": number(0, 1),
    "top_p": number(0, 1),
    "top_k": integer(0),
    "tools": Rule(is_objects, "a list of tools"),
    "tool_choice": Rule(_is_tool_choice, "an object with type auto, any, tool or none"),
    "output_config": Rule(is_object, "an object"),
    # Accepted, and dropped: see the module docstring.
    "thinking": Rule(is_object, "an object"),
    "cache_control": Rule(is_object, "an object"),
    "service_tier": Rule(is_str, "a string"),
    "speed": Rule(is_str, "a string"),
    "inference_geo": Rule(is_str, "a string"),
    "diagnostics": Rule(is_object, "an object"),
    "context_management": Rule(is_object, "an object"),
    "user_profile_id": Rule(is_str, "a string"),
    "workspace_id": Rule(is_str, "a string"),
}
OUTPUT_FORMAT = {
    "type": one_of("json_schema", required=True),
    "schema": Rule(is_object, "a JSON schema", True),
}
# count_tokens takes the request without the generation settings.
COUNT_REQUEST = {**REQUEST, "max_tokens": integer(1)}
MESSAGE = {
    "role": one_of("user", "assistant", "system", required=True),
    "content": Rule(_is_content, "a string or a list of content blocks", True),
}
BLOCKS: dict[str, dict[str, Rule]] = {
    "text": {"text": Rule(is_str, "a string", True)},
    "image": {"source": Rule(is_object, "an image source", True)},
    "tool_use": {
        "id": Rule(is_nonempty_str, "a tool use id", True),
        "name": Rule(is_nonempty_str, "a tool name", True),
        "input": Rule(is_object, "an object", True),
    },
    "tool_result": {
        "tool_use_id": Rule(is_nonempty_str, "a tool use id", True),
        "content": Rule(_is_content, "a string or a list of text and image blocks"),
        "is_error": Rule(is_bool, "a boolean"),
    },
    "thinking": {},
    "redacted_thinking": {},
}
_BY_ROLE = {
    "user": frozenset({"text", "image", "tool_result"}),
    "assistant": frozenset({"text", "tool_use", "thinking", "redacted_thinking"}),
    "system": frozenset({"text"}),
}
SOURCES: dict[str, dict[str, Rule]] = {
    "base64": {
        "media_type": Rule(is_nonempty_str, "an image media type", True),
        "data": Rule(is_str, "base64 data", True),
    },
    "url": {"url": Rule(is_nonempty_str, "a URL", True)},
}
TOOL = {
    "name": Rule(is_nonempty_str, "a tool name", True),
    "description": Rule(is_str, "a string"),
    "input_schema": Rule(is_object, "a JSON schema", True),
}


def _block(block: dict[str, Any], role: str, where: str) -> str:
    kind = block.get("type")
    if not isinstance(kind, str) or kind not in BLOCKS:
        raise InvalidRequest(
            f"Invalid value for '{where}type': expected one of {', '.join(BLOCKS)}.",
            param=where + "type",
        )
    if kind not in _BY_ROLE[role]:
        raise InvalidRequest(f"'{where}type': {kind} blocks cannot be in {role} turns.")
    check(block, BLOCKS[kind], where)
    if kind == "image":
        _source(block["source"], where + "source.")
    if kind == "tool_result" and isinstance(block.get("content"), list):
        for j, inner in enumerate(block["content"]):
            inner_where = f"{where}content[{j}]."
            if _block(inner, "user", inner_where) == "tool_result":
                raise InvalidRequest(f"'{inner_where}type': a tool result cannot nest another.")
    return kind


def _source(source: dict[str, Any], where: str) -> None:
    kind = source.get("type")
    if not isinstance(kind, str) or kind not in SOURCES:
        raise InvalidRequest(
            f"Invalid value for '{where}type': expected base64 or url.", param=where + "type"
        )
    check(source, SOURCES[kind], where)


def _image_part(source: dict[str, Any]) -> dict[str, Any]:
    if source["type"] == "base64":
        url = f"data:{source['media_type']};base64,{source['data']}"
    else:
        url = source["url"]
    return {"type": "image_url", "image_url": {"url": url}}


def _text(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(b["text"] for b in blocks if b.get("type") == "text")


def _tool_result(block: dict[str, Any], images: list[dict[str, Any]]) -> dict[str, Any]:
    content = block.get("content")
    if isinstance(content, list):
        images.extend(_image_part(b["source"]) for b in content if b.get("type") == "image")
        content = _text(content)
    text = content if isinstance(content, str) else ""
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
        if not is_nonempty_str(choice.get("name")):
            raise InvalidRequest(
                "'tool_choice.name' is required for type tool.", param="tool_choice"
            )
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def check_messages(body: dict[str, Any]) -> None:
    """Check every turn and block the translation reads."""
    for i, message in enumerate(body["messages"]):
        where = f"messages[{i}]."
        check(message, MESSAGE, where)
        content = message["content"]
        if isinstance(content, list):
            for j, block in enumerate(content):
                _block(block, message["role"], f"{where}content[{j}].")


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A checked Messages request as a chat completions request."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": system if is_str(system) else _text(system)})
    for message in body["messages"]:
        content = message["content"]
        role = message["role"]
        if role == "user":
            messages.extend(_user(content))
        elif role == "system":  # a system turn between the others
            messages.append(
                {"role": "system", "content": content if is_str(content) else _text(content)}
            )
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
        if not is_object(output_format):
            raise InvalidRequest("'output_config.format' must be an object.")
        check(output_format, OUTPUT_FORMAT, "output_config.format.")
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
    check_known(body, COUNT_REQUEST if counting else REQUEST)
    check_messages(body)
    return to_chat(body)
