"""A required tool call on a backend that only parses calls: start the answer with one.

llama.cpp parses tool calls out of answers and, when `tool_choice` is "required", lets them
be preceded by free text; a named function (`tool_choice: {type: function, ...}`) it does
not take at all (it falls back to "auto"). A tiny model then writes text until its token
limit and never calls. For a backend with `tool_call_prefill` (the text its chat template
opens a call with, `<tool_call>\\n` for the embedded SmolLM2), a request that requires a call
is sent instead with:

- the assistant turn begun with that text (llama.cpp continues a final assistant message,
  and its grammar then allows only a call to one of the offered tools, in their schemas);
- `tools` narrowed to the named function, and `tool_choice: "required"`;
- the opening marker as a stop sequence: the answer ends after one call (the small model
  would otherwise repeat it to its token limit). The answer is llama.cpp's own: `tool_calls`
  with `finish_reason: "tool_calls"`, whole or streamed.

Anything else (no tools, "auto", "none", a conversation that already ends with an assistant
turn) goes unchanged.
"""

from __future__ import annotations

from typing import Any


def force_tool_call(prefill: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """The body to send so that the answer is one tool call, when the request requires one."""
    tools = body.get("tools")
    messages = body.get("messages")
    if not prefill or not tools or not isinstance(tools, list) or not isinstance(messages, list):
        return body
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = named_function(choice)
        tools = [tool for tool in tools if _tool_name(tool) == name]
        if not tools:
            return body
    elif choice != "required":
        return body
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") == "assistant":
        return body
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, list) else []
    return {
        **body,
        "messages": [*messages, {"role": "assistant", "content": prefill}],
        "tools": tools,
        "tool_choice": "required",
        "stop": [*stops, prefill.strip()],
    }


def named_function(choice: dict[str, Any]) -> Any:
    """The function a `tool_choice` object names (None when it names none)."""
    function = choice.get("function")
    return function.get("name") if isinstance(function, dict) else None


def _tool_name(tool: Any) -> Any:
    function = tool.get("function") if isinstance(tool, dict) else None
    return function.get("name") if isinstance(function, dict) else None
