"""OpenAI-compatible model-routing inference gateway."""

__version__ = "0.1.0"
