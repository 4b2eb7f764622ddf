"""A scripted upstream that speaks OpenAI's Responses API itself (`POST /v1/responses`).

Written from the API reference: a whole Response, or the documented event sequence
(`response.created`, `response.in_progress`, `response.output_item.added`,
`response.content_part.added`, `response.output_text.delta`/`.done`,
`response.function_call_arguments.delta`/`.done`, `response.content_part.done`,
`response.output_item.done`, `response.completed`), each event with its `sequence_number`.
It answers `echo: <last user text>`, a function call when offered tools (unless the last item
is a `function_call_output`, which it echoes back), and records what it received (`GET /_last`).
`/fail500/v1/responses` answers 500; `/cut/v1/responses` stops a stream half way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.fake_upstreams import FakeUpstream

USAGE = {
    "input_tokens": 13,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 18,
}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return " ".join(p.get("text", "") for p in parts if isinstance(p, dict))


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    items = body["input"]
    items = (
        [{"type": "message", "role": "user", "content": items}] if isinstance(items, str) else items
    )
    last = items[-1] if items else {}
    if last.get("type") == "function_call_output":
        text = "tool said: " + _text_of(last.get("output"))
    else:
        users = [i for i in items if i.get("role") == "user"]
        text = "echo: " + (_text_of(users[-1].get("content")) if users else "")
    tools = body.get("tools") or []
    if tools and last.get("type") != "function_call_output":
        tool = tools[0]
        args = dict.fromkeys((tool.get("parameters") or {}).get("properties") or {}, "x")
        return {
            "type": "function_call",
            "id": "fc_up1",
            "call_id": "call_up1",
            "name": tool["name"],
            "arguments": orjson.dumps(args).decode(),
            "status": "completed",
        }
    return {
        "type": "message",
        "id": "msg_up1",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _response(body: dict[str, Any], number: int, status: str, output: list[Any]) -> dict[str, Any]:
    return {
        "id": f"resp_up{number}",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "usage": USAGE if status == "completed" else None,
        "metadata": body.get("metadata") or {},
    }


def _events(body: dict[str, Any], number: int, cut: bool) -> list[bytes]:
    item = _answer(body)
    events: list[bytes] = []

    def ev(kind: str, **data: Any) -> None:
        payload = {"type": kind, "sequence_number": len(events), **data}
        events.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n")

    ev("response.created", response=_response(body, number, "in_progress", []))
    ev("response.in_progress", response=_response(body, number, "in_progress", []))
    where = {"item_id": item["id"], "output_index": 0}
    if item["type"] == "message":
        text = item["content"][0]["text"]
        ev(
            "response.output_item.added",
            output_index=0,
            item={**item, "status": "in_progress", "content": []},
        )
        empty = {"type": "output_text", "text": "", "annotations": []}
        ev("response.content_part.added", **where, content_index=0, part=empty)
        for i, word in enumerate(text.split(" ")):
            ev(
                "response.output_text.delta",
                **where,
                content_index=0,
                delta=(" " if i else "") + word,
                logprobs=[],
            )
        ev("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
        ev("response.content_part.done", **where, content_index=0, part=item["content"][0])
    else:
        args = item["arguments"]
        ev(
            "response.output_item.added",
            output_index=0,
            item={**item, "status": "in_progress", "arguments": ""},
        )
        for part in (args[: len(args) // 2], args[len(args) // 2 :]):
            ev("response.function_call_arguments.delta", **where, delta=part)
        ev("response.function_call_arguments.done", **where, arguments=args)
    ev("response.output_item.done", output_index=0, item=item)
    ev("response.completed", response=_response(body, number, "completed", [item]))
    return events[: len(events) // 2] if cut else events


def responses_app(state: FakeUpstream) -> Starlette:
    """The scripted native Responses upstream; ``state`` records what it received."""

    async def create(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.last, state.count = body, state.count + 1
        state.headers = dict(request.headers)
        mode = request.url.path.strip("/").split("/", 1)[0]
        if mode == "fail500":
            return Response(b'{"error":{"message":"boom","type":"server_error"}}', 500)
        if not isinstance(body.get("model"), str) or "input" not in body:
            err = {
                "error": {
                    "message": "model and input are required",
                    "type": "invalid_request_error",
                }
            }
            return Response(orjson.dumps(err), 400, media_type="application/json")
        if not body.get("stream"):
            whole = _response(body, state.count, "completed", [_answer(body)])
            return Response(orjson.dumps(whole), media_type="application/json")
        events = _events(body, state.count, cut=mode == "cut")

        async def send() -> AsyncIterator[bytes]:
            for event in events:
                yield event

        return StreamingResponse(send(), media_type="text/event-stream")

    async def last(request: Request) -> Response:
        return Response(orjson.dumps({"last": state.last, "count": state.count}))

    routes = [Route("/_last", last)]
    for prefix in ("", "/fail500", "/cut"):
        routes.append(Route(prefix + "/v1/responses", create, methods=["POST"]))
    return Starlette(routes=routes)
