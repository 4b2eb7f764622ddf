"""Hypothesis strategies for request bodies of the three doors: mostly plausible, sometimes
anything at all."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

UNICODE = st.characters(blacklist_categories=("Cs",))
text = st.text(alphabet=UNICODE, max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=10,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the plausible value, sometimes anything at all."""
    return st.one_of(strategy, strategy, json_values)


def blocks(kinds: list[dict[str, Any]]) -> st.SearchStrategy[Any]:
    return maybe(st.lists(st.sampled_from(kinds) | st.dictionaries(text, json_values), max_size=3))


chat_bodies = st.fixed_dictionaries(
    {"model": maybe(st.just("m"))},
    optional={
        "messages": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "role": maybe(st.sampled_from(["user", "system", "assistant", "tool"])),
                    "content": maybe(text),
                    "tool_calls": json_values,
                    "tool_call_id": maybe(text),
                },
            ),
            max_size=3,
        ),
        "stream": json_values,
        "n": json_values,
        "tools": json_values,
        "stop": json_values,
    },
)
anthropic_blocks = [
    {"type": "text", "text": "hi"},
    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}},
    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]},
    {"type": "tool_result", "tool_use_id": "t1", "content": "r", "is_error": True},
    {"type": "thinking", "thinking": "hm", "signature": "s"},
    {"type": "document", "source": {}},
]
messages_bodies = st.fixed_dictionaries(
    {
        "model": maybe(st.just("m")),
        "max_tokens": maybe(st.integers(1, 100)),
        "messages": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "role": maybe(st.sampled_from(["user", "assistant", "system"])),
                        "content": maybe(text) | blocks(anthropic_blocks),
                    }
                ),
                min_size=1,
                max_size=3,
            )
        ),
    },
    optional={
        "system": maybe(text) | blocks([{"type": "text", "text": "sys"}]),
        "stream": maybe(st.booleans()),
        "stop_sequences": maybe(st.lists(text, max_size=4)),
        "temperature": maybe(st.floats(0, 1)),
        "tools": maybe(
            st.lists(
                st.sampled_from(
                    [
                        {"name": "f", "input_schema": {"type": "object"}},
                        {"type": "web_search_20250305", "name": "web_search"},
                    ]
                ),
                max_size=2,
            )
        ),
        "tool_choice": maybe(
            st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "tool", "name": "f"}])
        ),
        "output_config": maybe(st.just({"format": {"type": "json_schema", "schema": {}}})),
        "metadata": maybe(st.just({"user_id": "u"})),
    },
)
response_items = [
    {"role": "user", "content": "hi"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a"}]},
    {"role": "developer", "content": [{"type": "input_text", "text": "d"}]},
    {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]},
    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c", "output": "ok"},
    {"type": "reasoning", "summary": []},
    {"type": "item_reference", "id": "x"},
]
responses_bodies = st.fixed_dictionaries(
    {"model": maybe(st.just("m")), "input": maybe(text) | blocks(response_items)},
    optional={
        "instructions": maybe(text),
        "stream": maybe(st.booleans()),
        "max_output_tokens": maybe(st.integers(1, 100)),
        "tools": maybe(
            st.lists(
                st.sampled_from(
                    [
                        {"type": "function", "name": "f", "parameters": {"type": "object"}},
                        {"type": "web_search"},
                    ]
                ),
                max_size=2,
            )
        ),
        "tool_choice": maybe(st.sampled_from(["auto", {"type": "function", "name": "f"}])),
        "text": maybe(
            st.sampled_from(
                [
                    {"format": {"type": "json_object"}},
                    {"format": {"type": "json_schema", "name": "n", "schema": {}}},
                ]
            )
        ),
        "store": maybe(st.booleans()),
        "metadata": maybe(st.dictionaries(text, text, max_size=2)),
    },
)
