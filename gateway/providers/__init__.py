"""Provider families by name: the `provider:` field of a policy backend."""

from collections.abc import Callable

import httpx

from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Completion, EventStream, Provider, Usage
from gateway.providers.openai import OpenAIProvider

PROVIDERS: dict[str, Callable[[httpx.AsyncClient], Provider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
}

__all__ = ["PROVIDERS", "Completion", "EventStream", "Provider", "Usage"]
