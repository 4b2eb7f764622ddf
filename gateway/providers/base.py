"""The provider interface: one call (`complete`) and one stream (`stream`) per backend request."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.errors import UpstreamError, UpstreamStatusError
from gateway.policy import Backend, Endpoint
from gateway.providers.http import UpstreamResponse


@dataclass(slots=True)
class Usage:
    """Token counts reported by a backend (0 when it reported none)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_json(self) -> dict[str, int]:
        """An OpenAI usage object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def update_from(self, usage: Any) -> None:
        """Take counts from an OpenAI `usage` object, ignoring anything malformed."""
        if isinstance(usage, dict):
            prompt = usage.get("prompt_tokens")
            completion = usage.get("completion_tokens")
            if isinstance(prompt, int):
                self.prompt_tokens = prompt
            if isinstance(completion, int):
                self.completion_tokens = completion


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) answer, already in OpenAI wire format."""

    body: bytes
    usage: Usage
    status: int = 200


# A stream yields complete SSE events in OpenAI form (`data: {...}\n\n`), the last being
# `data: [DONE]\n\n`; it fills the Usage it was given as counts arrive.
EventStream = AsyncGenerator[bytes, None]


class Provider(Protocol):
    """A family of upstream APIs (OpenAI-compatible, Anthropic, ...)."""

    async def complete(
        self, backend: Backend, endpoint: Endpoint, body: dict[str, Any]
    ) -> Completion:
        """Send one request and return the whole answer."""
        ...

    def stream(
        self, backend: Backend, endpoint: Endpoint, body: dict[str, Any], usage: Usage
    ) -> EventStream:
        """Send one streaming request; the first `anext` raises if the backend fails."""
        ...


def status_error(backend_name: str, status: int, body: bytes) -> UpstreamStatusError:
    """The error for a non-2xx answer from a backend."""
    return UpstreamStatusError(
        f"backend {backend_name} answered HTTP {status}", upstream_status=status, body=body[:65536]
    )


def complete_events(buffer: bytearray, chunk: bytes) -> bytes:
    """Append a network chunk; return the complete SSE events at its front as one block.

    Forwarding blocks rather than single events keeps per-event Python work off streams:
    most chunks are whole events already and pass through as they came.
    """
    if b"\r" in chunk:
        chunk = chunk.replace(b"\r\n", b"\n")
    if buffer:
        buffer += chunk
        data = bytes(buffer)
        buffer.clear()
    else:
        data = chunk
    cut = data.rfind(b"\n\n") + 2
    if cut < 2:
        buffer += data
        return b""
    if cut < len(data):
        buffer += data[cut:]
        return data[:cut]
    return data


def split_block(block: bytes) -> list[bytes]:
    """The events of a block of complete SSE events, each ending with a blank line."""
    return [part + b"\n\n" for part in block.split(b"\n\n")[:-1]]


async def read_answer(response: UpstreamResponse, backend: str) -> tuple[bytes, dict[str, Any]]:
    """A whole answer as bytes and as a JSON object; raise on an error status or bad JSON."""
    try:
        content = await response.read()
    finally:
        response.close()
    if response.status >= 400:
        raise status_error(backend, response.status, content)
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"backend {backend} returned invalid JSON") from exc
    if not isinstance(parsed, dict):
        raise UpstreamError(f"backend {backend} returned an unexpected answer")
    return content, parsed
