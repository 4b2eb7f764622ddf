"""Request bodies: the JSON parse (depth-capped) and typed checks from one table per object.

A `Rule` says what one field must be (a test, the words for the error, whether it is
required); `check` applies a table of rules to an object and raises `InvalidRequest` naming
the field. Every door checks what it reads this way: the OpenAI tables are here, the Messages
and Responses doors keep theirs next to their translation. On the OpenAI doors unknown
fields pass through untouched to OpenAI-compatible upstreams.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.wire import Endpoint

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_N = 128
# Far deeper than any real request (JSON schemas included), and well inside what orjson
# serialises (254 levels) once a body is wrapped into a cache key or a stored record.
MAX_DEPTH = 64

Test = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    """What one field must be: a test on its (non-null) value, and the words for the error."""

    test: Test
    expected: str
    required: bool = False


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
    if _too_deep(body):
        raise _too_deep_error()
    return body


def _too_deep_error() -> InvalidRequest:
    return InvalidRequest(f"The request body is nested more than {MAX_DEPTH} levels deep.")


def _too_deep(body: dict[str, Any]) -> bool:
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def check(obj: Mapping[str, Any], rules: Mapping[str, Rule], where: str = "") -> None:
    """Apply a table of rules to an object; ``where`` prefixes the field names in errors."""
    for name, rule in rules.items():
        value = obj.get(name)
        if value is None:
            if rule.required:
                param = where + name
                raise InvalidRequest(
                    f"Missing required parameter: '{param}' ({rule.expected}).",
                    param=param,
                    code="missing_required_parameter",
                )
            continue
        if not rule.test(value):
            param = where + name
            raise InvalidRequest(
                f"Invalid value for '{param}': expected {rule.expected}.",
                param=param,
                code="invalid_value",
            )


def check_known(obj: Mapping[str, Any], rules: Mapping[str, Rule], where: str = "") -> None:
    """`check`, and refuse fields the table does not name (doors that translate)."""
    for name in obj:
        if name not in rules:
            param = where + name
            raise InvalidRequest(
                f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter"
            )
    check(obj, rules, where)


# The tests rules are made of.


def as_object(value: Any) -> dict[str, Any]:
    """The value if it is a JSON object, else an empty one (for reading untrusted answers)."""
    return value if isinstance(value, dict) else {}


def is_str(value: Any) -> bool:
    """A string."""
    return isinstance(value, str)


def is_nonempty_str(value: Any) -> bool:
    """A string with at least one character."""
    return isinstance(value, str) and bool(value)


def is_bool(value: Any) -> bool:
    """true or false."""
    return isinstance(value, bool)


def is_object(value: Any) -> bool:
    """A JSON object."""
    return isinstance(value, dict)


def is_objects(value: Any) -> bool:
    """A list of JSON objects."""
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def is_strs(value: Any) -> bool:
    """A list of strings."""
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def is_number(value: Any) -> bool:
    """An integer or a float (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(low: float, high: float) -> Rule:
    """A number in [low, high]."""
    return Rule(lambda v: is_number(v) and low <= v <= high, f"a number from {low:g} to {high:g}")


def integer(low: int, high: int | None = None, required: bool = False) -> Rule:
    """An integer of at least ``low`` (and at most ``high``)."""
    expected = f"an integer from {low} to {high}" if high else f"an integer of at least {low}"
    return Rule(
        lambda v: (
            isinstance(v, int)
            and not isinstance(v, bool)
            and v >= low
            and (high is None or v <= high)
        ),
        expected,
        required,
    )


def one_of(*values: str, required: bool = False) -> Rule:
    """One of the given strings."""
    return Rule(lambda v: v in values if isinstance(v, str) else False, _names(values), required)


def _names(values: tuple[str, ...] | frozenset[str]) -> str:
    return "one of " + ", ".join(sorted(values))


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


MODEL = Rule(is_nonempty_str, "a model name", required=True)

COMMON = {
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
CHAT = {
    **COMMON,
    "tools": Rule(is_objects, "a list of objects"),
    "functions": Rule(is_objects, "a list of objects"),
    "tool_choice": Rule(_is_tool_choice, "none, auto, required or an object"),
    "parallel_tool_calls": Rule(is_bool, "a boolean"),
    "response_format": Rule(is_object, "an object"),
    "logprobs": Rule(is_bool, "a boolean"),
    "messages": Rule(lambda v: is_objects(v) and bool(v), "a non-empty list of messages", True),
}
MESSAGE = {
    "role": one_of(*ROLES, required=True),
    "content": Rule(_is_content, "a string or a list of content parts"),
    "tool_calls": Rule(is_objects, "a list of tool calls"),
    "tool_call_id": Rule(is_str, "a string"),
    "name": Rule(is_str, "a string"),
}
PART = {"type": Rule(is_nonempty_str, "a content part type", required=True)}
TOOL = {
    "type": Rule(is_nonempty_str, "a tool type", required=True),
    "function": Rule(lambda v: is_object(v) and is_nonempty_str(v.get("name")), "{name, ...}"),
}
COMPLETIONS = {
    **COMMON,
    "prompt": Rule(_is_prompt, "a string, a list of strings or a list of tokens", True),
}
EMBEDDINGS = {
    "model": MODEL,
    "input": Rule(_is_prompt, "a string or a non-empty list of strings or tokens", True),
}


def _check_messages(body: dict[str, Any]) -> None:
    for i, tool in enumerate(body.get("tools") or ()):
        check(tool, TOOL, f"tools[{i}].")
    for i, message in enumerate(body["messages"]):
        where = f"messages[{i}]."
        check(message, MESSAGE, where)
        role = message["role"]
        content = message.get("content")
        if content is None and not (role == "assistant" and _says_something(message)):
            raise InvalidRequest(
                f"Missing required parameter: '{where}content'.", param=where + "content"
            )
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            param = where + "tool_call_id"
            raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
        if isinstance(content, list):
            for j, part in enumerate(content):
                check(part, PART, f"{where}content[{j}].")


def _says_something(message: dict[str, Any]) -> bool:
    """An assistant turn may leave out `content` when it called tools (or refused)."""
    return any(message.get(k) for k in ("tool_calls", "function_call", "refusal", "audio"))


_TABLES: dict[Endpoint, dict[str, Rule]] = {
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
