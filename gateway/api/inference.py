"""The OpenAI inference door: /v1/chat/completions, /v1/completions, /v1/embeddings.

Served as raw ASGI (see `gateway.api.asgi`): FastAPI's router, middleware and
Request/Response objects would add nothing here but per-request cost. The door reads the
head, hands the pipeline an `Incoming` (the body is read when the pipeline asks for it,
after authentication), and sends what comes back: the answer, or the error rendered by
`gateway.errors.render` with the headers known when it happened.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.asgi import Reply, RequestHead, read_body, read_head, send_reply
from gateway.cancellation import Watch, shutting_down
from gateway.errors import ClientGone, GatewayError, InternalError, MethodNotAllowed, render
from gateway.pipeline import Answer, Incoming, handle
from gateway.services import Services
from gateway.wire import Endpoint

log = logging.getLogger("gateway.api")

ROUTES: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    # Some clients use base URLs without /v1.
    "/chat/completions": "chat",
    "/completions": "completions",
    "/embeddings": "embeddings",
}
EVENT_STREAM = b"text/event-stream; charset=utf-8"
_INTERNAL = "The gateway hit an internal error; it has been logged."
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_for(given: str | None) -> str:
    """The caller's `x-request-id` when it is sane, else a new one."""
    if given and _REQUEST_ID.match(given):
        return given
    # Unique, not secret: a PRNG draw avoids a getrandom syscall per request.
    return f"{random.getrandbits(128):032x}"


def error_reply(err: GatewayError, request_id: str) -> Reply:
    """An error as a reply, through the one renderer."""
    rendered = render(err, request_id)
    return Reply(rendered.status, rendered.headers, rendered.body)


def internal_error(path: str) -> InternalError:
    """Log the exception being handled; the error the client gets (no details)."""
    log.exception("unhandled error", extra={"path": path})
    return InternalError(_INTERNAL)


class InferenceDoor:
    """Serves the inference routes; every other path goes to ``app`` (FastAPI)."""

    def __init__(self, app: ASGIApp, services: Services | None = None) -> None:
        self.app = app
        # Set by the app's lifespan once the services are built.
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        endpoint = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        head = read_head(scope)
        request_id = request_id_for(head.request_id)
        if scope["method"] != "POST":
            err = MethodNotAllowed("Method Not Allowed", headers={"allow": "POST"})
            await send_reply(error_reply(err, request_id), receive, send)
            return
        services = self.services
        assert services is not None, "the lifespan has not started"
        watch = Watch(services.drain)
        incoming = _incoming(endpoint, request_id, head, services, receive, watch)
        started = False
        try:
            async with handle(services, incoming) as answer:
                started = True
                await send_reply(_reply(answer), watch.receiver(receive), send)
            return
        except ClientGone:
            return
        except GatewayError as err:
            reply = error_reply(err, request_id)
        except asyncio.CancelledError:
            # Ours: the client left (no one to answer) or the drain ran out (a 503 if we can).
            reason = watch.claim()
            if reason is None:
                raise
            if started or reason != "drain":
                return
            reply = error_reply(shutting_down(), request_id)
        except Exception:
            if started:  # the answer is on its way: nothing else can be sent
                log.exception("error while sending an answer", extra={"path": scope["path"]})
                return
            reply = error_reply(internal_error(scope["path"]), request_id)
        await send_reply(reply, receive, send)


def _reply(answer: Answer) -> Reply:
    if answer.events is None:
        return Reply(200, answer.headers, answer.body)
    return Reply(200, answer.headers, media_type=EVENT_STREAM, stream=answer.events)


def _incoming(
    endpoint: Endpoint,
    request_id: str,
    head: RequestHead,
    services: Services,
    receive: Receive,
    watch: Watch,
) -> Incoming:
    limit = services.settings.max_body_bytes

    async def body() -> bytes:
        data = await read_body(receive, head, limit)
        watch.arm(receive)  # from now on, `receive` can only bring the disconnect
        return data

    return Incoming(
        endpoint,
        request_id,
        head.authorization,
        body,
        head.cache_control,
        head.cache_opt_out,
        head.traceparent,
        head.timeout_ms / 1000 if head.timeout_ms is not None else None,
        watch,
    )
