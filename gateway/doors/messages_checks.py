"""Anthropic Messages requests: the tables every field and block is checked against.

`REQUEST` names every top-level field the door takes. `DROPPED` ones (and `cache_control`
and thinking blocks inside messages) do not change what the model is asked and are not sent
on; any other field is a 400, as Anthropic's API answers. docs/architecture.md lists both.
"""

from __future__ import annotations

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
from gateway.errors import InvalidRequest


def _is_system(value: Any) -> bool:
    return isinstance(value, str) or (
        is_objects(value) and all(b.get("type") == "text" and is_str(b.get("text")) for b in value)
    )


def _is_content(value: Any) -> bool:
    return isinstance(value, str) or is_objects(value)


def _is_tool_choice(value: Any) -> bool:
    kind = value.get("type") if is_object(value) else None
    return kind in ("auto", "any", "none") or (
        kind == "tool" and is_nonempty_str(value.get("name"))
    )


def _is_output_config(value: Any) -> bool:
    fmt = value.get("format") if is_object(value) else {}
    return fmt is None or (
        is_object(fmt) and fmt.get("type") == "json_schema" and is_object(fmt.get("schema"))
    )


# Accepted, and not sent on.
DROPPED = {
    **same_rule(is_object, "an object", "thinking", "cache_control", "diagnostics"),
    **same_rule(is_object, "an object", "context_management"),
    **same_rule(is_str, "a string", "service_tier", "speed", "inference_geo", "workspace_id"),
    **same_rule(is_str, "a string", "user_profile_id"),
}
REQUEST = Table(
    {
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
        "tool_choice": Rule(_is_tool_choice, "{type: auto | any | none} or {type: tool, name}"),
        "output_config": Rule(_is_output_config, "an object (format: {type: json_schema, schema})"),
        **DROPPED,
    },
    strict=True,
)
# count_tokens takes the request without the generation settings.
COUNT_REQUEST = Table({**REQUEST, "max_tokens": integer(1)}, strict=True)
MESSAGE = Table(
    {
        "role": one_of("user", "assistant", "system", required=True),
        "content": Rule(_is_content, "a string or a list of content blocks", True),
    }
)
BLOCKS: dict[str, Table] = {
    "text": Table({"text": Rule(is_str, "a string", True)}),
    "image": Table({"source": Rule(is_object, "an image source", True)}),
    "tool_use": Table(
        {
            "id": Rule(is_nonempty_str, "a tool use id", True),
            "name": Rule(is_nonempty_str, "a tool name", True),
            "input": Rule(is_object, "an object", True),
        }
    ),
    "tool_result": Table(
        {
            "tool_use_id": Rule(is_nonempty_str, "a tool use id", True),
            "content": Rule(_is_content, "a string or a list of text and image blocks"),
            "is_error": Rule(is_bool, "a boolean"),
        }
    ),
    "thinking": Table({}),
    "redacted_thinking": Table({}),
}
_BY_ROLE = {
    "user": frozenset({"text", "image", "tool_result"}),
    "assistant": frozenset({"text", "tool_use", "thinking", "redacted_thinking"}),
    "system": frozenset({"text"}),
}
SOURCES: dict[str, Table] = {
    "base64": Table(
        {
            "media_type": Rule(is_nonempty_str, "an image media type", True),
            "data": Rule(is_str, "base64 data", True),
        }
    ),
    "url": Table({"url": Rule(is_nonempty_str, "a URL", True)}),
}
TOOL = Table(
    {
        "name": Rule(is_nonempty_str, "a tool name", True),
        "description": Rule(is_str, "a string"),
        "input_schema": Rule(is_object, "a JSON schema", True),
    }
)


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


def check_messages(body: dict[str, Any]) -> None:
    """Check every turn and block the translation reads."""
    for i, message in enumerate(body["messages"]):
        where = f"messages[{i}]."
        check(message, MESSAGE, where)
        content = message["content"]
        if isinstance(content, list):
            for j, block in enumerate(content):
                _block(block, message["role"], f"{where}content[{j}].")


def check_request(body: dict[str, Any], counting: bool = False) -> None:
    """Check a decoded Messages request (or a count_tokens one): every field and block."""
    check(body, COUNT_REQUEST if counting else REQUEST)
    check_messages(body)
