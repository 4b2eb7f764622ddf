"""The wire types shared by the pipeline and the providers: what goes up and what comes back.

Providers see only these (never the policy's models): an `Upstream` says where and how to
call, a `Native` is a front door's own body for a backend that speaks the door's dialect, a
`Completion` or an `EventStream` is what came back, `Usage` the tokens it reported.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Endpoint = Literal["chat", "completions", "embeddings"]


@dataclass(frozen=True, slots=True)
class Upstream:
    """Everything a provider needs to call one backend."""

    name: str
    base_url: str
    # None: send the model name the client asked for (passthrough).
    model: str | None = None
    api_key: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    connect_timeout_s: float = 5.0
    # Non-streaming: the whole answer. Streams: to the first event, then between events.
    timeout_s: float = 60.0
    first_token_timeout_s: float = 30.0
    idle_timeout_s: float = 30.0
    # Anthropic needs max_tokens; used when the client gave none.
    default_max_tokens: int = 4096
    # Sent to an OpenAI-compatible backend as max_tokens when the client set no limit.
    max_tokens: int | None = None
    # Front-door dialects it speaks itself besides its family's ("responses": OpenAI's).
    dialects: frozenset[str] = frozenset()
    # The text that opens a tool call in the backend's chat template: a request that requires
    # a call is sent with the answer begun by it (providers/forced_call.py).
    tool_call_prefill: str | None = None

    @property
    def read_timeout_s(self) -> float:
        """The socket-level backstop: no single read waits longer than any deadline here."""
        return max(self.timeout_s, self.first_token_timeout_s, self.idle_timeout_s)


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

    def update_native(self, usage: Any) -> None:
        """Take counts from an Anthropic or Responses usage object (`input_tokens`, ...).

        Anthropic counts cache writes and reads apart from `input_tokens`; all are input.
        """
        if not isinstance(usage, dict):
            return
        parts = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        counts = [usage.get(k) for k in parts]
        if any(isinstance(c, int) for c in counts):
            self.prompt_tokens = sum(c for c in counts if isinstance(c, int))
        output = usage.get("output_tokens")
        if isinstance(output, int):
            self.completion_tokens = output

    def update_from(self, usage: Any) -> None:
        """Take counts from an OpenAI `usage` object, ignoring anything malformed."""
        if isinstance(usage, dict):
            prompt = usage.get("prompt_tokens")
            completion = usage.get("completion_tokens")
            if isinstance(prompt, int):
                self.prompt_tokens = prompt
            if isinstance(completion, int):
                self.completion_tokens = completion


@dataclass(frozen=True, slots=True)
class Native:
    """A front door's request in its own dialect, for a backend that speaks it.

    ``body`` is what the client sent (gateway-only fields removed); the target's model name
    replaces ``model``. ``headers`` go up with it (Anthropic's `anthropic-beta`). ``unknown``:
    a field of the body the chat translation cannot carry; a target that does not speak the
    dialect is skipped, and the request is refused (naming it) when none does.
    """

    dialect: str
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    unknown: str | None = None

    def to(self, model: str) -> Native:
        """The same request for a backend that calls the model ``model``."""
        return Native(self.dialect, {**self.body, "model": model}, self.headers, self.unknown)


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) answer: OpenAI's wire format, or a `Native` request's own."""

    body: bytes
    usage: Usage
    # "chat": an OpenAI body; else the native dialect it answers in ("messages", "responses").
    dialect: str = "chat"


# A stream yields blocks of complete SSE events in OpenAI form (`data: {...}\n\n`), the last
# ending with `data: [DONE]\n\n` (a native stream: the backend's events as they came); it
# fills the Usage it was given as counts arrive.
EventStream = AsyncGenerator[bytes, None]


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether a streaming request asked for the final usage chunk."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
