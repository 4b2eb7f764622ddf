"""Request bodies: the JSON parse (depth-capped), and the OpenAI doors' tables of checks.

Every door checks what it reads with `gateway.checks` tables; these are the chat,
completions and embeddings ones. On the OpenAI doors unknown fields pass through untouched
to OpenAI-compatible upstreams.
"""

from __future__ import annotations

from typing import Any

import orjson

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
)
from gateway.errors import InvalidRequest
from gateway.wire import Endpoint

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_N = 128
# Far deeper than any real request (JSON schemas included), and well inside what orjson
# serialises (254 levels) once a body is wrapped into a cache key or a stored record.
MAX_DEPTH = 64


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object body, refusing nesting deeper than MAX_DEPTH."""
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "recursion" in str(exc):
            raise _too_deep_error() from exc
        raise InvalidRequest(
            "We could not parse the JSON body of your request. "
            "(It must be valid UTF-8 JSON; see https://platform.openai.com/docs/api-reference)"
        ) from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if _too_deep(raw, body):
        raise _too_deep_error()
    return body


def _too_deep_error() -> InvalidRequest:
    return InvalidRequest(f"The request body is nested more than {MAX_DEPTH} levels deep.")


def _too_deep(raw: bytes, body: dict[str, Any]) -> bool:
    # Each level opens a bracket: a body with few of them cannot be deep (most bodies).
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    return not _within(body, MAX_DEPTH - 1)


def _within(node: Any, levels: int) -> bool:
    """Whether the containers under ``node`` go at most ``levels`` deeper."""
    # `type(...) is` rather than isinstance: orjson builds exact dicts and lists, and this
    # runs once per container of a body.
    for child in node.values() if type(node) is dict else node:
        kind = type(child)
        if (kind is dict or kind is list) and (levels == 0 or not _within(child, levels - 1)):
            return False
    return True


def _is_stop(value: Any) -> bool:
    return isinstance(value, str) or (is_strs(value) and len(value) <= 4)


def _is_prompt(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(p, str | int) or (isinstance(p, list) and all(isinstance(t, int) for t in p))
            for p in value
        )
    )


def _is_tool_choice(value: Any) -> bool:
    return value in ("none", "auto", "required") or isinstance(value, dict)


def _is_content(value: Any) -> bool:
    return isinstance(value, str) or is_objects(value)


_COMMON = {
    "model": MODEL,
    "stream": Rule(is_bool, "a boolean"),
    "stream_options": Rule(is_object, "an object"),
    "n": integer(1, MAX_N),
    "max_tokens": integer(1),
    "max_completion_tokens": integer(1),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "stop": Rule(_is_stop, "a string or a list of up to 4 strings"),
    "user": Rule(is_str, "a string"),
}
CHAT = Table(
    {
        **_COMMON,
        "tools": Rule(is_objects, "a list of objects"),
        "functions": Rule(is_objects, "a list of objects"),
        "tool_choice": Rule(_is_tool_choice, "none, auto, required or an object"),
        "parallel_tool_calls": Rule(is_bool, "a boolean"),
        "response_format": Rule(is_object, "an object"),
        "logprobs": Rule(is_bool, "a boolean"),
        "messages": Rule(lambda v: is_objects(v) and bool(v), "a non-empty list of messages", True),
    }
)
MESSAGE = Table(
    {
        "role": one_of(*ROLES, required=True),
        "content": Rule(_is_content, "a string or a list of content parts"),
        "tool_calls": Rule(is_objects, "a list of tool calls"),
        "tool_call_id": Rule(is_str, "a string"),
        "name": Rule(is_str, "a string"),
    }
)
TOOL = Table(
    {
        "type": Rule(is_nonempty_str, "a tool type", required=True),
        "function": Rule(lambda v: is_object(v) and is_nonempty_str(v.get("name")), "{name, ...}"),
    }
)
COMPLETIONS = Table(
    {
        **_COMMON,
        "prompt": Rule(_is_prompt, "a string, a list of strings or a list of tokens", True),
    }
)
EMBEDDINGS = Table(
    {
        "model": MODEL,
        "input": Rule(_is_prompt, "a string or a non-empty list of strings or tokens", True),
    }
)


def _check_messages(body: dict[str, Any]) -> None:
    for i, tool in enumerate(body.get("tools") or ()):
        check(tool, TOOL, f"tools[{i}].")
    _check_named_choice(body)
    for i, message in enumerate(body["messages"]):
        try:
            _check_message(message)
        except InvalidRequest:
            # Again, naming the field in full: the prefix is only built for a bad message.
            _check_message(message, f"messages[{i}].")
            raise


def _check_named_choice(body: dict[str, Any]) -> None:
    """A `tool_choice` that names a function must name one of `tools` (as OpenAI answers)."""
    choice = body.get("tool_choice")
    function = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(function, dict) or "name" not in function:
        return
    offered = [tool["function"]["name"] for tool in body.get("tools") or () if "function" in tool]
    if not any(function["name"] == name for name in offered):
        raise InvalidRequest(
            "Invalid value for 'tool_choice': it names a function that is not in 'tools'.",
            param="tool_choice",
        )


def _check_message(message: dict[str, Any], where: str = "") -> None:
    check(message, MESSAGE, where)
    role = message["role"]
    content = message.get("content")
    if content is None and not (role == "assistant" and _says_something(message)):
        param = where + "content"
        raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        param = where + "tool_call_id"
        raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    if isinstance(content, list):  # parts are objects (MESSAGE); each needs a type
        for j, part in enumerate(content):
            kind = part.get("type")
            if not (isinstance(kind, str) and kind):
                param = f"{where}content[{j}].type"
                raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param)


def _says_something(message: dict[str, Any]) -> bool:
    """An assistant turn may leave out `content` when it called tools (or refused)."""
    return any(message.get(k) for k in ("tool_calls", "function_call", "refusal", "audio"))


_TABLES: dict[Endpoint, Table] = {
    "chat": CHAT,
    "completions": COMPLETIONS,
    "embeddings": EMBEDDINGS,
}


def validate(endpoint: Endpoint, body: dict[str, Any]) -> str:
    """Check a request body for an endpoint; return the model name asked for."""
    check(body, _TABLES[endpoint])
    if endpoint == "chat":
        _check_messages(body)
    model: str = body["model"]
    return model
