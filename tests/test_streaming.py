"""SSE framing, stream assembly and cache replay: property tests."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from gateway.sse import complete_events, split_block
from gateway.streaming import Assembler, replay

# Valid Unicode only: lone surrogates cannot be sent as UTF-8 JSON at all.
UNICODE = st.characters(blacklist_categories=("Cs",))

events = st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
        max_size=30,
    ).map(lambda t: ("data: " + t + "\n\n").encode()),
    max_size=12,
)


@given(events=events, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_blocks_reassemble_the_stream_exactly(events: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(events)
    points = sorted({c for c in cuts if c < len(stream)})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    buffer = bytearray()
    blocks = [complete_events(buffer, chunk) for chunk in chunks]
    assert b"".join(blocks) == stream and not buffer
    assert [e for b in blocks if b for e in split_block(b)] == events


def test_crlf_framing_is_normalised() -> None:
    buffer = bytearray()
    assert complete_events(buffer, b"data: a\r\n\r\ndata: b\r\n") == b"data: a\n\n"
    assert complete_events(buffer, b"\r\n") == b"data: b\n\n"


text = st.text(alphabet=UNICODE, max_size=40)
completions = st.builds(
    lambda content, finish, calls, usage: {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content if (content or not calls) else None,
                    **(
                        {
                            "tool_calls": [
                                {
                                    "id": f"call_{i}",
                                    "type": "function",
                                    "function": {"name": name, "arguments": args},
                                }
                                for i, (name, args) in enumerate(calls)
                            ]
                        }
                        if calls
                        else {}
                    ),
                },
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage,
    },
    content=text,
    finish=st.sampled_from(["stop", "length", "tool_calls"]),
    calls=st.lists(st.tuples(st.text(alphabet=UNICODE, min_size=1, max_size=10), text), max_size=2),
    usage=st.fixed_dictionaries(
        {"prompt_tokens": st.integers(0, 99), "completion_tokens": st.integers(0, 99)}
    ).map(lambda u: {**u, "total_tokens": u["prompt_tokens"] + u["completion_tokens"]}),
)


@given(completion=completions)
def test_replay_then_assemble_round_trips(completion: dict[str, Any]) -> None:
    assembler = Assembler()
    for event in replay(completion, include_usage=True):
        assembler.feed(event)
    rebuilt = assembler.result()
    assert rebuilt is not None
    original = completion["choices"][0]["message"]
    message = rebuilt["choices"][0]["message"]
    assert message.get("content") == original["content"]
    assert message.get("tool_calls") == original.get("tool_calls")
    assert rebuilt["choices"][0]["finish_reason"] == completion["choices"][0]["finish_reason"]
    assert rebuilt["usage"] == completion["usage"]


def test_incomplete_stream_is_never_assembled() -> None:
    assembler = Assembler()
    chunk = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
    }
    assembler.feed(b"data: " + orjson.dumps(chunk) + b"\n\n")
    assert assembler.result() is None  # no [DONE]: a cut stream is not cached
