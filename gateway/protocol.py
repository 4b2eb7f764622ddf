"""OpenAI request checks: only what must hold for routing and a clean error; unknown fields
pass through untouched to OpenAI-compatible upstreams."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.wire import Endpoint

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_N = 128


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object body."""
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. "
            "(It must be valid UTF-8 JSON; see https://platform.openai.com/docs/api-reference)"
        ) from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_number(value) or not low <= value <= high:
        raise InvalidRequest(
            f"Invalid value for '{name}': expected a number between {low:g} and {high:g}.",
            param=name,
            code="invalid_value",
        )


def _check_int(body: dict[str, Any], name: str, low: int, high: int | None = None) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidRequest(
            f"Invalid value for '{name}': expected an integer of at least {low}.",
            param=name,
            code="invalid_value",
        )
    if high is not None and value > high:
        raise InvalidRequest(
            f"Invalid value for '{name}': at most {high} is allowed.",
            param=name,
            code="invalid_value",
        )


def _check_common(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("You must provide a model parameter.", param="model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    _check_int(body, "n", 1, MAX_N)
    _check_int(body, "max_tokens", 1)
    _check_int(body, "max_completion_tokens", 1)
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    _check_number(body, "presence_penalty", -2, 2)
    _check_number(body, "frequency_penalty", -2, 2)
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str)
        or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))
    ):
        raise InvalidRequest("'stop' must be a string or a list of up to 4 strings.", param="stop")
    return model


def _check_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' is a required property (a list).", param="messages")
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{i}] must be an object.", param=f"messages[{i}]")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{i}].role",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(
                f"messages[{i}].content must be a string or a list of content parts.",
                param=f"messages[{i}].content",
            )
    for name in ("tools", "functions"):
        tools = body.get(name)
        if tools is not None and not (
            isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
        ):
            raise InvalidRequest(f"'{name}' must be a list of objects.", param=name)
    response_format = body.get("response_format")
    if response_format is not None and not isinstance(response_format, dict):
        raise InvalidRequest("'response_format' must be an object.", param="response_format")


def _check_prompt(body: dict[str, Any]) -> None:
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequest("'prompt' is a required property.", param="prompt")
    if not isinstance(prompt, str | list) or (isinstance(prompt, list) and not prompt):
        raise InvalidRequest(
            "'prompt' must be a string, a list of strings or a list of tokens.", param="prompt"
        )


def _check_input(body: dict[str, Any]) -> None:
    value = body.get("input")
    if not isinstance(value, str | list) or (isinstance(value, list) and not value):
        raise InvalidRequest(
            "'input' must be a string or a non-empty list of strings or tokens.", param="input"
        )


_CHECKS = {"chat": _check_messages, "completions": _check_prompt, "embeddings": _check_input}


def validate(endpoint: Endpoint, body: dict[str, Any]) -> str:
    """Check a request body for an endpoint; return the model name asked for."""
    model = _check_common(body)
    _CHECKS[endpoint](body)
    return model
