"""Provider families by name: the `provider:` field of a policy backend."""

from collections.abc import Callable

from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Provider
from gateway.providers.http import UpstreamClient
from gateway.providers.openai import OpenAIProvider

PROVIDERS: dict[str, Callable[[UpstreamClient], Provider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
}

__all__ = ["PROVIDERS", "Provider", "UpstreamClient"]
