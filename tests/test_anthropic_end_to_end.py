"""Chat completions served by an Anthropic-compatible upstream through the gateway."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import Upstreams

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
        },
    }
]


def test_plain_chat_translates_both_ways(client: openai.OpenAI, upstreams: Upstreams) -> None:
    completion = client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"},
        ],
        max_tokens=50,
        temperature=1.5,
        stop="STOP",
    )
    sent = upstreams.anthropic_state.last
    assert sent["system"] == "Be brief."
    assert sent["model"] == "claude-test" and sent["max_tokens"] == 50
    assert sent["temperature"] == 1.0  # Anthropic's range is 0..1
    assert sent["stop_sequences"] == ["STOP"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert completion.choices[0].message.content == "echo: second"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (21, 9)


def test_tool_round_trip(client: openai.OpenAI, upstreams: Upstreams) -> None:
    completion = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "look up 'cat'"}],
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
    )
    sent = upstreams.anthropic_state.last
    assert sent["tools"][0]["input_schema"]["properties"] == {"word": {"type": "string"}}
    assert sent["tool_choice"] == {"type": "any"}
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id == "toolu_01" and json.loads(call.function.arguments) == {"word": "x"}

    client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "user", "content": "look up 'cat'"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": "toolu_01", "content": "a small feline"},
        ],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    sent = upstreams.anthropic_state.last
    assert sent["messages"][1]["content"][0] == {
        "type": "tool_use",
        "id": "toolu_01",
        "name": "lookup",
        "input": {"word": "x"},
    }
    assert sent["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "a small feline"}
        ],
    }


def test_images_as_url_and_base64(client: openai.OpenAI, upstreams: Upstreams) -> None:
    client.chat.completions.create(
        model="claude",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
                ],
            }
        ],
    )
    blocks = upstreams.anthropic_state.last["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/a.png"},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"},
    }


def test_streaming_text_and_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 21


def test_streaming_tool_calls(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "look up"}],
            tools=TOOLS,  # type: ignore[arg-type]
            stream=True,
        )
    )
    args = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls and c.choices[0].delta.tool_calls[0].function
    )
    assert json.loads(args) == {"word": "x"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_stream_cut_mid_way_raises(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model="claude-cut", messages=[{"role": "user", "content": "a b c d"}], stream=True
        ):
            pass
