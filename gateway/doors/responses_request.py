"""OpenAI Responses requests → chat requests: checks from tables, then translation.

`REQUEST` names every top-level field the door takes; `store`, `metadata` and
`previous_response_id` are the door's own. `DROPPED` ones (and `text.verbosity` and
`reasoning` input items) do not change what the model is asked and are not sent on; any
other field (`conversation`, `prompt`, hosted tools, `background: true`) is a 400 naming
it. docs/architecture.md lists both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.checks import (
    MODEL,
    Rule,
    Table,
    check,
    integer,
    is_bool,
    is_nonempty_str,
    is_object,
    is_objects,
    is_str,
    is_strs,
    number,
    one_of,
    same_rule,
)
from gateway.doors import new_id
from gateway.errors import InvalidRequest


def _is_input(value: Any) -> bool:
    return isinstance(value, str) or (is_objects(value) and bool(value))


def _is_content(value: Any) -> bool:
    return isinstance(value, str) or is_objects(value)


def _is_metadata(value: Any) -> bool:
    return (
        is_object(value)
        and len(value) <= 16
        and all(isinstance(v, str) and len(v) <= 512 for v in value.values())
    )


def _is_tool_choice(value: Any) -> bool:
    return value in ("none", "auto", "required") or (
        is_object(value) and value.get("type") == "function" and is_nonempty_str(value.get("name"))
    )


# Accepted, and not sent on.
DROPPED = {
    "truncation": one_of("auto", "disabled"),
    "include": Rule(is_strs, "a list of strings"),
    "context_management": Rule(is_objects, "a list of objects"),
    "max_tool_calls": integer(1),
    "top_logprobs": integer(0, 20),
    **same_rule(is_str, "a string", "service_tier", "safety_identifier", "prompt_cache_key"),
    **same_rule(is_str, "a string", "prompt_cache_retention"),
    **same_rule(is_object, "an object", "reasoning", "stream_options", "prompt_cache_options"),
    **same_rule(is_object, "an object", "moderation", "image", "access_programs"),
    **same_rule(is_object, "an object", "background_options"),
}
REQUEST = Table(
    {
        "model": MODEL,
        "input": Rule(_is_input, "a string or a non-empty list of input items", True),
        "instructions": Rule(is_str, "a string"),
        "tools": Rule(is_objects, "a list of tools"),
        "tool_choice": Rule(_is_tool_choice, "none, auto, required or {type: function, name}"),
        "parallel_tool_calls": Rule(is_bool, "a boolean"),
        "text": Rule(is_object, "an object"),
        "max_output_tokens": integer(1),
        "temperature": number(0, 2),
        "top_p": number(0, 1),
        "metadata": Rule(_is_metadata, "up to 16 string values"),
        "stream": Rule(is_bool, "a boolean"),
        "store": Rule(is_bool, "a boolean"),
        "previous_response_id": Rule(is_nonempty_str, "a response id"),
        "user": Rule(is_str, "a string"),
        "background": Rule(lambda v: v is False, "false (background responses are not supported)"),
        **DROPPED,
    },
    strict=True,
)
ITEMS: dict[str, Table] = {
    "message": Table(
        {
            "role": one_of("user", "assistant", "system", "developer", required=True),
            "content": Rule(_is_content, "a string or a list of content parts", True),
        }
    ),
    "function_call": Table(
        {
            "call_id": Rule(is_nonempty_str, "a call id", True),
            "name": Rule(is_nonempty_str, "a function name", True),
            "arguments": Rule(is_str, "a JSON string", True),
        }
    ),
    "function_call_output": Table(
        {
            "call_id": Rule(is_nonempty_str, "a call id", True),
            "output": Rule(_is_content, "a string or a list of content parts", True),
        }
    ),
    "reasoning": Table({}),
}
PARTS: dict[str, Table] = {
    "input_text": Table({"text": Rule(is_str, "a string", True)}),
    "output_text": Table({"text": Rule(is_str, "a string", True)}),
    "refusal": Table({"refusal": Rule(is_str, "a string", True)}),
    "input_image": Table(
        {"image_url": Rule(is_nonempty_str, "an image URL (file ids are not supported)")}
    ),
}
TOOL = Table(
    {
        "name": Rule(is_nonempty_str, "a function name", True),
        "description": Rule(is_str, "a string"),
        "parameters": Rule(is_object, "a JSON schema"),
        "strict": Rule(is_bool, "a boolean"),
    }
)
FORMATS: dict[str, Table] = {
    "text": Table({}),
    "json_object": Table({}),
    "json_schema": Table(
        {
            "name": Rule(is_nonempty_str, "a schema name", True),
            "schema": Rule(is_object, "a JSON schema", True),
            "description": Rule(is_str, "a string"),
            "strict": Rule(is_bool, "a boolean"),
        }
    ),
}
_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


@dataclass(slots=True)
class Turn:
    """A checked Responses request: its chat body, and what the door keeps of its input."""

    chat: dict[str, Any]
    # This request's input as chat messages (stored as history) and as listed items.
    messages: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)


def _choose(table: dict[str, Table], value: dict[str, Any], where: str) -> str:
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in table:
        raise InvalidRequest(
            f"Invalid value for '{where}type': expected one of {', '.join(table)}.",
            param=where + "type",
        )
    check(value, table[kind], where)
    return kind


def _parts(content: str | list[dict[str, Any]], where: str) -> str | list[dict[str, Any]]:
    """Message content as chat content (text, or text and image parts)."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = _choose(PARTS, part, f"{where}content[{j}].")
        if kind == "input_image":
            if not part.get("image_url"):
                raise InvalidRequest(f"'{where}content[{j}].image_url' is required.")
            image = {"url": part["image_url"], "detail": part.get("detail") or "auto"}
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append({"type": "text", "text": part.get("text", part.get("refusal", ""))})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _output_text(output: str | list[dict[str, Any]]) -> str:
    if isinstance(output, str):
        return output
    return "".join(p["text"] for p in output if isinstance(p.get("text"), str))


def _listed(item: dict[str, Any], kind: str) -> dict[str, Any]:
    """An input item as `input_items` lists it: with an id, and message content as parts."""
    listed = {**item, "id": item.get("id") or new_id(_PREFIXES[kind])}
    if kind == "message":
        listed.setdefault("status", "completed")
        if isinstance(item["content"], str):
            part = "output_text" if item["role"] == "assistant" else "input_text"
            listed["content"] = [{"type": part, "text": item["content"]}]
    return listed


def _items(raw: str | list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input items as chat messages, and as stored items (with ids)."""
    if isinstance(raw, str):
        item = {"type": "message", "role": "user", "content": raw}
        return [{"role": "user", "content": raw}], [_listed(item, "message")]
    messages: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        where = f"input[{i}]."
        typed: dict[str, Any] = item if "type" in item else {**item, "type": "message"}
        kind = _choose(ITEMS, typed, where)
        if kind == "reasoning":
            continue
        items.append(_listed(typed, kind))
        if kind == "message":
            role = typed["role"]
            content = _parts(typed["content"], where)
            if role == "assistant" and not isinstance(content, str):
                raise InvalidRequest(f"'{where}content': assistant turns hold text only.")
            # "developer" is OpenAI's newer name for system; open backends know "system".
            messages.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind == "function_call":
            call = {
                "id": typed["call_id"],
                "type": "function",
                "function": {"name": typed["name"], "arguments": typed["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            output = _output_text(typed["output"])
            messages.append({"role": "tool", "tool_call_id": typed["call_id"], "content": output})
    return messages, items


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise InvalidRequest(
                f"'tools[{i}].type': only function tools are supported by this gateway "
                f"(not {tool.get('type')!r}).",
                param=f"tools[{i}].type",
            )
        check(tool, TOOL, f"tools[{i}].")
        function = {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool
        }
        out.append({"type": "function", "function": function})
    return out


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    fmt = text.get("format")
    if fmt is None:
        return None
    if not is_object(fmt):
        raise InvalidRequest("'text.format' must be an object.", param="text.format")
    kind = _choose(FORMATS, fmt, "text.format.")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    schema = {k: fmt[k] for k in ("name", "schema", "description", "strict") if k in fmt}
    return {"type": "json_schema", "json_schema": schema}


def parse_request(body: dict[str, Any], history: list[dict[str, Any]]) -> Turn:
    """Check a decoded Responses request and translate it; ``history`` is the stored
    conversation of `previous_response_id` (its instructions are not carried over)."""
    check(body, REQUEST)
    turn, items = _items(body["input"])
    messages = (
        [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
    )
    chat: dict[str, Any] = {"model": body["model"], "messages": [*messages, *history, *turn]}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            choice = {"type": "function", "function": {"name": choice["name"]}}
        if choice is not None:
            chat["tool_choice"] = choice
    response_format = _response_format(body["text"]) if body.get("text") else None
    if response_format is not None:
        chat["response_format"] = response_format
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return Turn(chat, turn, items)
