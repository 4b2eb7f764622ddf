"""The OpenAI-compatible inference routes. Plain Starlette endpoints: no per-request
dependency injection or model validation on the hot path."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.deps import get_services
from gateway.pipeline import handle


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions"""
    return await handle(get_services(request), request, "chat")


async def completions(request: Request) -> Response:
    """POST /v1/completions"""
    return await handle(get_services(request), request, "completions")


async def embeddings(request: Request) -> Response:
    """POST /v1/embeddings"""
    return await handle(get_services(request), request, "embeddings")


ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    # Some clients use base URLs without /v1.
    Route("/chat/completions", chat_completions, methods=["POST"]),
    Route("/completions", completions, methods=["POST"]),
    Route("/embeddings", embeddings, methods=["POST"]),
]
