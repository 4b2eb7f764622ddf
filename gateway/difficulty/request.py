"""Flatten an OpenAI chat or completions request body into what the classifier reads.

Bodies arrive straight from clients, so every field may be missing, ``None`` or of an
unexpected type; nothing here raises on odd input, it simply sees less.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Very long prompts are cut to a head and a tail: the task statement is usually at one
# end, and this keeps scoring time bounded whatever the client sends.
MAX_TEXT_CHARS = 12_000
_HEAD_CHARS = 8_000
_TAIL_CHARS = MAX_TEXT_CHARS - _HEAD_CHARS

_TEXT_PART_TYPES = frozenset({"text", "input_text"})
_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})


@dataclass(slots=True)
class RequestView:
    """The parts of a request that carry a difficulty signal."""

    text: str = ""
    total_chars: int = 0
    n_messages: int = 0
    n_user: int = 0
    n_assistant: int = 0
    n_tool_messages: int = 0
    system_chars: int = 0
    n_images: int = 0
    n_tools: int = 0
    json_mode: int = 0  # 0 free text, 1 json_object, 2 json_schema
    max_tokens: int | None = None


def _content_text(content: Any, view: RequestView) -> str:
    """Text of a message ``content`` (string or list of parts); counts image parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        pieces: list[str] = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, Mapping):
                kind = part.get("type")
                if kind in _IMAGE_PART_TYPES:
                    view.n_images += 1
                elif kind in _TEXT_PART_TYPES or kind is None:
                    text = part.get("text")
                    if isinstance(text, str):
                        pieces.append(text)
        return "\n".join(pieces)
    return ""


def _prompt_text(prompt: Any) -> str:
    """Text of a completions ``prompt`` (string, list of strings; token ids are skipped)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray)):
        return "\n".join(p for p in prompt if isinstance(p, str))
    return ""


def _clip(text: str) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:_HEAD_CHARS] + "\n" + text[-_TAIL_CHARS:]


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)


def view_request(body: object) -> RequestView:
    """Extract the classifier's view of a chat (``messages``) or completions (``prompt``) body."""
    view = RequestView()
    if not isinstance(body, Mapping):
        return view
    texts: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, Sequence) and not isinstance(messages, (str, bytes, bytearray)):
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            view.n_messages += 1
            role = message.get("role")
            text = _content_text(message.get("content"), view)
            # Assistant and tool turns are model or program output: they count as
            # conversation depth but their words say little about the task asked.
            if role == "assistant":
                view.n_assistant += 1
            elif role in ("tool", "function"):
                view.n_tool_messages += 1
            elif role in ("system", "developer"):
                view.system_chars += len(text)
                texts.append(text)
            else:
                view.n_user += 1
                texts.append(text)
    if "prompt" in body:
        prompt = _prompt_text(body.get("prompt"))
        if prompt:
            view.n_user += 1
            texts.append(prompt)
    tools = body.get("tools")
    if not isinstance(tools, Sequence) or isinstance(tools, (str, bytes)):
        tools = body.get("functions")
    if isinstance(tools, Sequence) and not isinstance(tools, (str, bytes)):
        view.n_tools = sum(1 for t in tools if isinstance(t, Mapping))
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping):
        kind = fmt.get("type")
        view.json_mode = 2 if kind == "json_schema" else 1 if kind == "json_object" else 0
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    view.max_tokens = _int_or_none(max_tokens)
    text = "\n".join(t for t in texts if t)
    view.total_chars = len(text)
    view.text = _clip(text)
    return view
