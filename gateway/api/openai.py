"""The OpenAI-compatible inference routes, served as raw ASGI (see `gateway.asgi`).

They bypass FastAPI: a route is a path and the endpoint kind the pipeline serves there.
"""

from __future__ import annotations

from gateway.policy import Endpoint

ROUTES: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    # Some clients use base URLs without /v1.
    "/chat/completions": "chat",
    "/completions": "completions",
    "/embeddings": "embeddings",
}
