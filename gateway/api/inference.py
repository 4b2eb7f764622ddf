"""The inference doors on the raw ASGI path: OpenAI's (chat, completions, embeddings), and
Anthropic's Messages and OpenAI's Responses (`messages.py`, `responses.py`).

Served as raw ASGI (see `gateway.api.asgi`): FastAPI's router, middleware and
Request/Response objects would add nothing here but per-request cost. `ROUTES` maps a path
to its endpoint and door; `gateway.api.door.serve` hands the pipeline an `Incoming` (the
body is read when the pipeline asks for it, after authentication) and sends what comes back
in the door's dialect. Every other path goes to FastAPI.
"""

from __future__ import annotations

import random
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api import messages, responses
from gateway.api.asgi import Reply, RequestHead, read_head, send_reply
from gateway.api.door import EVENT_STREAM, Door, error_reply, internal_error, serve
from gateway.errors import Dialect, MethodNotAllowed
from gateway.pipeline import Answer, BodyParser
from gateway.services import Services
from gateway.wire import Endpoint

__all__ = ["ROUTES", "InferenceDoor", "internal_error", "request_id_for"]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class OpenAIExchange:
    """OpenAI's own doors: the body as the client sent it, the answer as the backend did."""

    door: str | None = None
    dialect: Dialect = "openai"
    parse: BodyParser | None = None

    def authorization(self, head: RequestHead) -> str | None:
        """The bearer token."""
        return head.authorization

    async def reply(self, answer: Answer) -> Reply:
        """The answer's bytes or SSE blocks as they are."""
        if answer.events is None:
            return Reply(200, answer.headers, answer.body)
        return Reply(200, answer.headers, media_type=EVENT_STREAM, stream=answer.events)


_OPENAI = OpenAIExchange()


def openai_door(services: Services, request_id: str, head: RequestHead) -> OpenAIExchange:
    """OpenAI's doors keep no per-request state: one exchange serves them all."""
    return _OPENAI


ROUTES: dict[str, tuple[Endpoint, Door]] = {
    "/v1/chat/completions": ("chat", openai_door),
    "/v1/completions": ("completions", openai_door),
    "/v1/embeddings": ("embeddings", openai_door),
    "/v1/messages": ("chat", messages.MessagesExchange),
    "/v1/responses": ("chat", responses.ResponsesExchange),
    # Some clients use base URLs without /v1.
    "/chat/completions": ("chat", openai_door),
    "/completions": ("completions", openai_door),
    "/embeddings": ("embeddings", openai_door),
    "/messages": ("chat", messages.MessagesExchange),
    "/responses": ("chat", responses.ResponsesExchange),
}


def request_id_for(given: str | None) -> str:
    """The caller's `x-request-id` when it is sane, else a new one."""
    if given and _REQUEST_ID.match(given):
        return given
    # Unique, not secret: a PRNG draw avoids a getrandom syscall per request.
    return f"{random.getrandbits(128):032x}"


class InferenceDoor:
    """Serves the inference routes; every other path goes to ``app`` (FastAPI)."""

    def __init__(self, app: ASGIApp, services: Services | None = None) -> None:
        self.app = app
        # Set by the app's lifespan once the services are built.
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        route = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        endpoint, door = route
        head = read_head(scope)
        request_id = request_id_for(head.request_id)
        services = self.services
        assert services is not None, "the lifespan has not started"
        exchange = door(services, request_id, head)
        if scope["method"] != "POST":
            err = MethodNotAllowed("Method Not Allowed", headers={"allow": "POST"})
            await send_reply(error_reply(err, request_id, exchange.dialect), receive, send)
            return
        await serve(exchange, endpoint, services, head, request_id, receive, send, scope["path"])
