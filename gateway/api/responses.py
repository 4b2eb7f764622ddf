"""OpenAI's Responses API as a front door: POST /v1/responses, and the stored responses
(GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items).

A request is checked and translated into a chat body (`gateway.doors.responses_request`),
with the stored conversation of `previous_response_id` in front; it is routed by the same
pipeline as chat (endpoint label `responses`), and the chat answer is rendered back as a
Response or its event stream (`gateway.doors.responses_answer`). A backend declared
`responses: native` gets the body as is instead (model renamed, unknown fields kept) and its
answer comes back untouched (`gateway.doors.native`). With `store` (the default) the
Response, its input items and the conversation are kept per tenant (`gateway.response_store`)
before the client sees the end of the answer, so a follow-up can name it at once.

`previous_response_id` is always the gateway's to resolve, whoever answered: a native
backend gets the stored conversation's items in front of `input` and no
`previous_response_id`. It may not have kept the earlier turn (another backend answered it,
or the client's `store: false` went up with it), and a fallback must see the same history.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from gateway.api.asgi import Reply, RequestHead
from gateway.api.deps import ServicesDep
from gateway.api.door import EVENT_STREAM
from gateway.auth import Tenant
from gateway.doors import native, new_id
from gateway.doors.responses_answer import shell, to_response
from gateway.doors.responses_request import REQUEST, Turn, parse_request
from gateway.doors.responses_stream import ResponseStream, event
from gateway.errors import Dialect, NotFound, UpstreamError
from gateway.pipeline import Answer, BodyParser
from gateway.protocol import parse_body
from gateway.services import Services
from gateway.wire import Native

# Not sent on to a native backend: the gateway resolves it (see above).
_OWN = frozenset({"previous_response_id"})

router = APIRouter()


class ResponsesExchange:
    """One Responses request: its id, its translated turn, and where it will be stored."""

    door: str | None = "responses"
    dialect: Dialect = "openai"

    def __init__(self, services: Services, request_id: str, head: RequestHead) -> None:
        self.services = services
        self.id = new_id("resp")
        self.store = True
        self.partition = ""
        self.history: list[dict[str, Any]] = []
        # The conversation so far as Responses items (what a native backend is sent).
        self.thread: list[dict[str, Any]] = []
        self.input: list[dict[str, Any]] = []
        self.turn = Turn({})
        self.base: dict[str, Any] = {}

    @property
    def parse(self) -> BodyParser:
        """The Responses body (and the stored conversation it continues) → the chat body."""
        return self._parse

    async def _parse(self, raw: bytes, tenant: Tenant) -> tuple[dict[str, Any], Native]:
        body = parse_body(raw)
        previous = body.get("previous_response_id")
        if isinstance(previous, str) and previous:
            record = await self.services.responses.get(tenant.partition, previous)
            if record is None:
                raise NotFound(
                    f"Previous response with id '{previous}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            history, thread = record.get("history"), record.get("thread")
            self.history = history if isinstance(history, list) else []
            self.thread = thread if isinstance(thread, list) else []
        # Fields the door does not know go to a native backend only (the chat view lacks them).
        unknown = [name for name in body if name not in REQUEST]
        known = {k: v for k, v in body.items() if k in REQUEST} if unknown else body
        self.turn = parse_request(known, self.history)
        self.store = body.get("store") is not False
        self.partition = tenant.partition
        self.base = shell(body, self.id)
        self.input = native.input_items(body["input"])
        own = {k: v for k, v in body.items() if k not in _OWN}
        if self.thread:  # the stored conversation in front; else the input as it came
            own["input"] = [*self.thread, *self.input]
        first = unknown[0] if unknown else None
        return self.turn.chat, Native("responses", own, unknown=first)

    def authorization(self, head: RequestHead) -> str | None:
        """The bearer token."""
        return head.authorization

    async def reply(self, answer: Answer) -> Reply:
        """A Response, or its event stream."""
        if answer.dialect == "responses":  # a native backend's own answer
            return await self._native(answer)
        if answer.events is None:
            try:
                completion = orjson.loads(answer.body)
            except orjson.JSONDecodeError as exc:
                raise UpstreamError("The backend returned an answer that is not JSON.") from exc
            response, message = to_response(self.base, completion)
            await self._keep(response, message)
            return Reply(200, answer.headers, orjson.dumps(response))
        events = self._events(answer.events)
        return Reply(200, answer.headers, media_type=EVENT_STREAM, stream=events)

    async def _events(self, blocks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        stream = ResponseStream(self.base)
        try:
            async for block in blocks:
                out = stream.feed(block)
                if out:
                    yield b"".join(out)
        finally:
            await blocks.aclose()
        last, message = stream.end()
        if message is not None:
            await self._keep(stream.response, message)
        yield last

    async def _native(self, answer: Answer) -> Reply:
        if answer.events is None:
            if self.store:  # the provider has checked it is a Response
                await self._keep_native(orjson.loads(answer.body))
            return Reply(200, answer.headers, answer.body)

        async def keep(block: bytes) -> None:  # before the client sees the end
            response = native.finished_response(block)
            if response is not None:
                await self._keep_native(response)

        stream = native.relay(answer.events, _error_event, keep)
        return Reply(200, answer.headers, media_type=EVENT_STREAM, stream=stream)

    async def _keep_native(self, response: Any) -> None:
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            self.id = response["id"]  # what the client will name as previous_response_id
            await self._keep(response, native.history_of(response), native.output_items(response))

    async def _keep(
        self,
        response: dict[str, Any],
        message: dict[str, Any],
        output: list[dict[str, Any]] | None = None,
    ) -> None:
        if not self.store:
            return
        history = [*self.history, *self.turn.messages, message]
        outputs = output if output is not None else response.get("output") or []
        thread = [*self.thread, *self.input, *outputs]
        record = {"response": response, "items": self.turn.items, "history": history}
        record["thread"] = thread
        await self.services.responses.put(self.partition, self.id, record)


def _error_event(error: Any) -> bytes:
    """The pipeline's error event as a Responses `error` event."""
    message = error.get("message") if isinstance(error, dict) else None
    text = message if isinstance(message, str) else "The stream failed."
    return event("error", 0, {"code": "server_error", "message": text, "param": None})


def _json(value: Any) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")


async def _record(services: Services, request: Request, response_id: str) -> dict[str, Any]:
    tenant = services.state.keys.authenticate(request.headers.get("authorization"))
    record = await services.responses.get(tenant.partition, response_id)
    if record is None:
        raise _not_found(response_id)
    return record


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"No response found with id '{response_id}'.", param="response_id")


@router.get("/v1/responses/{response_id}")
async def retrieve(response_id: str, services: ServicesDep, request: Request) -> Response:
    """A stored Response of the caller's tenant."""
    record = await _record(services, request, response_id)
    return _json(record["response"])


@router.delete("/v1/responses/{response_id}")
async def delete(response_id: str, services: ServicesDep, request: Request) -> Response:
    """Forget a stored Response."""
    tenant = services.state.keys.authenticate(request.headers.get("authorization"))
    if not await services.responses.delete(tenant.partition, response_id):
        raise _not_found(response_id)
    return _json({"id": response_id, "object": "response", "deleted": True})


@router.get("/v1/responses/{response_id}/input_items")
async def input_items(
    response_id: str,
    services: ServicesDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> Response:
    """The input items of a stored Response, a page at a time."""
    record = await _record(services, request, response_id)
    items = [i for i in record.get("items") or () if isinstance(i, dict)]
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [i.get("id") for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return _json(
        {
            "object": "list",
            "data": page,
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": len(items) > limit,
        }
    )
