"""Golden pairs for the Anthropic translation, written from the public API references."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from gateway.providers.anthropic_answer import StreamTranslator, from_anthropic
from gateway.providers.anthropic_request import to_anthropic
from gateway.wire import Usage

DATA = Path(__file__).parent / "data" / "anthropic"


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())  # type: ignore[no-any-return]


def test_request_with_system_images_tools_and_results() -> None:
    case = _load("request_tools.json")
    assert to_anthropic(case["openai"], "claude-sonnet-4-5", 4096) == case["anthropic"]


def test_response_with_text_and_tool_use() -> None:
    case = _load("response_tool_use.json")
    completion, usage = from_anthropic(case["anthropic"])
    completion.pop("created")
    assert completion == case["openai"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (500, 91)


def test_stream_events_become_chunks() -> None:
    case = _load("stream_text.json")
    usage = Usage()
    translator = StreamTranslator("claude-sonnet-4-5", include_usage=True, usage=usage)
    out: list[bytes] = []
    for event in case["anthropic_events"]:
        out.extend(translator.feed(event))
    assert out[-1] == b"data: [DONE]\n\n"
    chunks = [orjson.loads(e[6:]) for e in out[:-1]]
    deltas = [[c["choices"][0]["delta"], c["choices"][0]["finish_reason"]] for c in chunks[:-1]]
    assert deltas == case["openai_deltas"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == case["usage"]
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
