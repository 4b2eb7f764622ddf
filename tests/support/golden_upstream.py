"""A scripted OpenAI-compatible upstream for the golden files (`tests/golden/*.json`).

The model a request names is the case: its `upstream.completion` answers a whole request,
its `upstream.chunks` (then `data: [DONE]`) a streaming one, as OpenAI's API sends them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def golden_app() -> Starlette:
    """The upstream: answers each case's request with its scripted answer."""

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        path = GOLDEN / f"{body['model']}.json"
        if not path.is_file():
            return Response(b'{"error":{"message":"no such case"}}', 404)
        upstream = json.loads(path.read_text())["upstream"]
        if not body.get("stream"):
            return Response(orjson.dumps(upstream["completion"]), media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            for chunk in upstream["chunks"]:
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
