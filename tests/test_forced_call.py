"""providers/forced_call.py: which requests are sent with the tool call begun, and how."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.providers.forced_call import force_tool_call

PREFILL = "<tool_call>\n"
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "add"}},
]
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def test_required_begins_the_answer_and_stops_at_a_second_call() -> None:
    body = {"messages": ASK, "tools": TOOLS, "tool_choice": "required", "max_tokens": 9}
    sent = force_tool_call(PREFILL, body)
    assert sent["messages"] == [*ASK, {"role": "assistant", "content": PREFILL}]
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "required"
    assert sent["stop"] == ["<tool_call>"] and sent["max_tokens"] == 9
    assert body["messages"] == ASK and "stop" not in body  # the client's body is not changed


def test_a_named_function_narrows_the_tools() -> None:
    choice = {"type": "function", "function": {"name": "add"}}
    sent = force_tool_call(PREFILL, {"messages": ASK, "tools": TOOLS, "tool_choice": choice})
    assert sent["tools"] == [TOOLS[1]] and sent["tool_choice"] == "required"
    assert sent["messages"][-1] == {"role": "assistant", "content": PREFILL}


@pytest.mark.parametrize(
    ("stop", "sent"), [("END", ["END", "<tool_call>"]), (["a"], ["a", "<tool_call>"])]
)
def test_the_clients_stop_sequences_are_kept(stop: Any, sent: list[str]) -> None:
    body = {"messages": ASK, "tools": TOOLS, "tool_choice": "required", "stop": stop}
    assert force_tool_call(PREFILL, body)["stop"] == sent


@pytest.mark.parametrize(
    "body",
    [
        {"messages": ASK, "tools": TOOLS, "tool_choice": "auto"},
        {"messages": ASK, "tools": TOOLS, "tool_choice": "none"},
        {"messages": ASK, "tools": TOOLS},
        {"messages": ASK, "tool_choice": "required"},
        {
            "messages": [*ASK, {"role": "assistant", "content": "<tool_call>"}],
            "tools": TOOLS,
            "tool_choice": "required",
        },
        {"messages": ASK, "tools": TOOLS, "tool_choice": {"type": "function", "function": {}}},
        {"prompt": "x", "tools": TOOLS, "tool_choice": "required"},
    ],
)
def test_anything_else_goes_unchanged(body: dict[str, Any]) -> None:
    assert force_tool_call(PREFILL, body) is body


def test_without_a_prefill_nothing_changes() -> None:
    body = {"messages": ASK, "tools": TOOLS, "tool_choice": "required"}
    assert force_tool_call(None, body) is body
