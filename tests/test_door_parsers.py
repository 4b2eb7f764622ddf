"""The three doors' parsers in-process: fuzzed bodies raise only GatewayError, and whatever a
door accepts becomes a chat body the OpenAI door would accept too (and the cache key, the
classifier and the Anthropic translation can read)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cache import cache_key
from gateway.difficulty.request import view_request
from gateway.doors import messages_request, responses_request
from gateway.errors import GatewayError, InvalidRequest
from gateway.protocol import MAX_DEPTH, parse_body, validate
from gateway.providers.anthropic_request import to_anthropic
from tests.support.door_bodies import chat_bodies, messages_bodies, responses_bodies


def _downstream(chat: dict[str, Any]) -> None:
    """What reads a chat body after the door: the cache key, the classifier, translation."""
    cache_key("p", "m", "v1", "chat", chat)
    view_request(chat)
    if not (isinstance(chat.get("n"), int) and chat["n"] > 1):
        to_anthropic(chat, "claude", 256)


def _chat(body: Any) -> None:
    parsed = parse_body(json.dumps(body).encode())
    validate("chat", parsed)
    _downstream(parsed)


@settings(max_examples=300, deadline=None)
@given(body=chat_bodies)
def test_chat_parser_raises_only_gateway_errors(body: dict[str, Any]) -> None:
    with contextlib.suppress(GatewayError):
        _chat(body)


@settings(max_examples=300, deadline=None)
@given(body=messages_bodies)
def test_messages_parser_raises_only_gateway_errors(body: dict[str, Any]) -> None:
    try:
        chat = messages_request.parse_request(parse_body(json.dumps(body).encode()))
    except GatewayError:
        return
    # Anything the door accepts is a chat body the OpenAI door accepts (up to OpenAI's
    # four-stop limit, which Anthropic's API does not have).
    validate("chat", {k: v for k, v in chat.items() if k != "stop"})
    _downstream(chat)


@settings(max_examples=300, deadline=None)
@given(body=responses_bodies)
def test_responses_parser_raises_only_gateway_errors(body: dict[str, Any]) -> None:
    history = [{"role": "user", "content": "before"}, {"role": "assistant", "content": "ok"}]
    try:
        turn = responses_request.parse_request(parse_body(json.dumps(body).encode()), history)
    except GatewayError:
        return
    validate("chat", turn.chat)
    _downstream(turn.chat)
    orjson.dumps({"history": [*history, *turn.messages], "items": turn.items})


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64))
def test_raw_bytes_are_refused_cleanly(raw: bytes) -> None:
    with contextlib.suppress(GatewayError):
        parse_body(raw)


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_DEPTH, 300, 1023])
def test_nesting_is_capped_at_parse_time(depth: int) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": _nested(depth)}]}
    raw = orjson.dumps(body) if depth < 250 else _deep_bytes(depth)
    with pytest.raises(InvalidRequest, match="nested"):
        parse_body(raw)


def _deep_bytes(depth: int) -> bytes:
    # orjson cannot even write this deep: build the bytes by hand.
    inner = b"[" * depth + b'"x"' + b"]" * depth
    return b'{"model":"m","messages":[{"role":"user","content":' + inner + b"}]}"


def test_a_body_at_the_cap_is_accepted() -> None:
    parse_body(orjson.dumps({"a": _nested(MAX_DEPTH - 2)}))


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": {}, "content": "x"}, "messages[0].role"),
        ({"role": ["user"], "content": "x"}, "messages[0].role"),
        ({"content": "x"}, "messages[0].role"),
        ({"role": "user"}, "messages[0].content"),
        ({"role": "user", "content": None}, "messages[0].content"),
        ({"role": "assistant"}, "messages[0].content"),
        ({"role": "tool", "content": "x"}, "messages[0].tool_call_id"),
        ({"role": "user", "content": [{"text": "no type"}]}, "messages[0].content[0].type"),
    ],
)
def test_chat_messages_are_checked_by_type(message: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate("chat", {"model": "m", "messages": [message]})
    assert info.value.param == param


def test_assistant_tool_calls_may_have_null_content() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": "ok"},
    ]
    assert validate("chat", {"model": "m", "messages": messages}) == "m"


def test_messages_translation_golden() -> None:
    body = {
        "model": "claude-x",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "...", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "P"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                ],
            },
            {"role": "system", "content": "Now summarise."},
        ],
        "tools": [{"name": "w", "input_schema": {"type": "object"}, "cache_control": {}}],
        "tool_choice": {"type": "tool", "name": "w"},
        "stream": True,
    }
    assert messages_request.parse_request(body) == {
        "model": "claude-x",
        "max_tokens": 100,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "t1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"city":"P"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
            },
            {"role": "system", "content": "Now summarise."},
        ],
        "tools": [
            {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "w"}},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
