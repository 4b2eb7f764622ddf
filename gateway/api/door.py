"""What a front door is, and the one loop that serves every door on the raw ASGI path.

A door reads its dialect's request head (which header carries the key), gives the pipeline a
parser from its dialect to the chat body (OpenAI's doors give none), and renders the
pipeline's `Answer` and any `GatewayError` back in its dialect. `serve` is the same for all:
it enters `pipeline.handle`, sends what the door renders, and owns the error path.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from starlette.types import Receive, Send

from gateway.api.asgi import Reply, RequestHead, read_body, send_reply
from gateway.cancellation import Watch, shutting_down
from gateway.errors import ClientGone, Dialect, GatewayError, InternalError, render
from gateway.pipeline import Answer, BodyParser, Incoming, handle
from gateway.services import Services
from gateway.wire import Endpoint

log = logging.getLogger("gateway.api")

EVENT_STREAM = b"text/event-stream; charset=utf-8"
_INTERNAL = "The gateway hit an internal error; it has been logged."


class Exchange(Protocol):
    """One request at one door: its dialect in, the answer or error out."""

    # The `endpoint` label of its metrics when not the endpoint's own; the error dialect.
    door: str | None
    dialect: Dialect

    @property
    def parse(self) -> BodyParser | None:
        """Body bytes of this dialect → the checked chat body (None: OpenAI's, as is)."""
        ...

    def authorization(self, head: RequestHead) -> str | None:
        """The caller's key as an `Authorization` header value."""
        ...

    async def reply(self, answer: Answer) -> Reply:
        """The pipeline's answer in this door's dialect."""
        ...


class Door(Protocol):
    """Starts an exchange per request."""

    def __call__(self, services: Services, request_id: str, head: RequestHead) -> Exchange:
        """A new exchange."""
        ...


def error_reply(err: GatewayError, request_id: str, dialect: Dialect = "openai") -> Reply:
    """An error as a reply, through the one renderer."""
    rendered = render(err, request_id, dialect)
    return Reply(rendered.status, rendered.headers, rendered.body)


def internal_error(path: str) -> InternalError:
    """Log the exception being handled; the error the client gets (no details)."""
    log.exception("unhandled error", extra={"path": path})
    return InternalError(_INTERNAL)


async def serve(
    exchange: Exchange,
    endpoint: Endpoint,
    services: Services,
    head: RequestHead,
    request_id: str,
    receive: Receive,
    send: Send,
    path: str,
) -> None:
    """Serve one request through the pipeline; errors go out in the door's dialect."""
    limit = services.settings.max_body_bytes
    watch = Watch(services.drain)

    async def body() -> bytes:
        data = await read_body(receive, head, limit)
        watch.arm(receive)  # from now on, `receive` can only bring the disconnect
        return data

    incoming = Incoming(
        endpoint,
        request_id,
        exchange.authorization(head),
        body,
        head.cache_control,
        head.cache_opt_out,
        head.traceparent,
        exchange.door,
        exchange.parse,
        head.timeout_ms / 1000 if head.timeout_ms is not None else None,
        watch,
    )
    started = False
    try:
        async with handle(services, incoming) as answer:
            reply = await exchange.reply(answer)
            started = True
            await send_reply(reply, watch.receiver(receive), send)
        return
    except ClientGone:
        return
    except asyncio.CancelledError:
        # Ours: the client left (no one to answer) or the drain ran out (a 503 if we can).
        reason = watch.claim()
        if reason is None:
            raise
        if started or reason != "drain":
            return
        failed = error_reply(shutting_down(), request_id, exchange.dialect)
    except Exception as exc:
        if started:  # the answer is on its way: nothing else can be sent
            log.exception("error while sending an answer", extra={"path": path})
            return
        err = exc if isinstance(exc, GatewayError) else internal_error(path)
        failed = error_reply(err, request_id, exchange.dialect)
    await send_reply(failed, receive, send)
