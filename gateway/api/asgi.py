"""Raw ASGI for the inference doors: the request head, the body and the reply.

The inference routes are the hot path, so they skip Starlette's Request, Response and
StreamingResponse: the headers a door needs are read in one pass over
``scope["headers"]``, the body straight from ``receive``, and a reply goes out as two
``send`` messages (or one per stream block).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.types import Message, Receive, Scope, Send

from gateway.errors import BodyTooLarge, ClientGone


@dataclass(slots=True)
class RequestHead:
    """The request headers the inference doors read (ASGI names are lower-case)."""

    authorization: str | None = None
    # Anthropic's SDK sends its key here (the Messages door reads it).
    api_key: str | None = None
    request_id: str | None = None
    cache_control: str = ""
    cache_opt_out: bool = False
    content_length: int | None = None
    traceparent: str | None = None
    # `x-gateway-timeout-ms`: the client's own deadline.
    timeout_ms: int | None = None
    # Anthropic's beta features: passed on when the Messages door forwards a body as is.
    anthropic_beta: str | None = None


def read_head(scope: Scope) -> RequestHead:
    """Pick the headers the doors need out of an ASGI scope, in one pass."""
    head = RequestHead()
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            head.authorization = value.decode("latin-1")
        elif name == b"content-length":
            if value.isdigit():
                head.content_length = int(value)
        elif name == b"x-api-key":
            head.api_key = value.decode("latin-1")
        elif name == b"x-request-id":
            head.request_id = value.decode("latin-1")
        elif name == b"cache-control":
            head.cache_control = value.decode("latin-1").lower()
        elif name == b"x-gateway-cache":
            head.cache_opt_out = value.lower() == b"bypass"
        elif name == b"traceparent":
            head.traceparent = value.decode("latin-1")
        elif name == b"x-gateway-timeout-ms" and value.isdigit():
            head.timeout_ms = int(value)
        elif name == b"anthropic-beta":
            head.anthropic_beta = value.decode("latin-1")
    return head


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"Request body too large: the limit is {limit} bytes.")


async def read_body(receive: Receive, head: RequestHead, limit: int) -> bytes:
    """The whole body, refusing anything over ``limit`` bytes without reading it all."""
    if head.content_length is not None and head.content_length > limit:
        raise _too_large(limit)
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: one message
        if len(body) > limit:
            raise _too_large(limit)
        return body
    chunks = bytearray(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunks += message.get("body", b"")
        if len(chunks) > limit:
            raise _too_large(limit)
        if not message.get("more_body", False):
            return bytes(chunks)


@dataclass(slots=True)
class Reply:
    """An HTTP answer: a whole body, or a stream of SSE blocks."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    media_type: bytes = b"application/json"
    stream: AsyncIterator[bytes] | None = None


def _raw_headers(reply: Reply) -> list[tuple[bytes, bytes]]:
    raw = [(b"content-type", reply.media_type)]
    raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items())
    return raw


async def send_reply(reply: Reply, receive: Receive, send: Send) -> None:
    """Send a reply; a stream stops (and closes its source) once the client has gone."""
    headers = _raw_headers(reply)
    if reply.stream is None:
        headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        return
    headers.append((b"cache-control", b"no-cache"))
    stream = reply.stream
    # After the body, the only message `receive` can bring is the disconnect.
    gone: asyncio.Future[Message] = asyncio.ensure_future(receive())
    try:
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        async for block in stream:
            if gone.done():
                break
            await send({"type": "http.response.body", "body": block, "more_body": True})
        if not gone.done():
            await send({"type": "http.response.body", "body": b""})
    finally:
        if not gone.done():
            gone.cancel()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
