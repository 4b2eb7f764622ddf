"""Scripted OpenAI- and Anthropic-compatible upstreams: real HTTP servers for tests.

Behaviour is chosen by a path prefix, so one server covers every fault:
`/v1` answers normally, `/fail500/v1` answers 500, `/slow/v1` waits 3 s before answering,
`/cut/v1` stops a stream half way, `/garbage/v1` returns a non-JSON body,
`/ratelimited/v1` answers 429, `/busy/v1` answers 503 with `Retry-After: 30` (`/busydate/v1`:
the same as an HTTP date), `/cookie/v1` answers normally with a `Set-Cookie`.
`GET /_last` returns the last request body received (and its `Cookie` header).
"""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.model_servers import free_port


def _example(schema: Any) -> Any:
    """A minimal value that satisfies a simple JSON schema."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if "anyOf" in schema:
        return _example(schema["anyOf"][0])
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _example(v) for k, v in props.items()}
    if kind == "array":
        return []
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if "enum" in schema:
        return schema["enum"][0]
    return "x"


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and "text" in p
                )
    return ""


class FakeUpstream:
    """Shared state: the last request seen, per server."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}
        self.count = 0
        self.cookie: str | None = None
        self.headers: dict[str, str] = {}  # of the last request
        self.streams_abandoned = 0  # chat streams whose reader went away before the end


def _mode(request: Request) -> str:
    first = request.url.path.strip("/").split("/", 1)[0]
    return first if first != "v1" else "ok"


async def _faults(mode: str) -> Response | None:
    if mode == "fail500":
        return Response(b'{"error":{"message":"boom","type":"server_error"}}', 500)
    if mode == "ratelimited":
        return Response(b'{"error":{"message":"slow down","type":"rate_limit_error"}}', 429)
    if mode == "busy":
        body = b'{"error":{"message":"overloaded","type":"server_error"}}'
        return Response(body, 503, headers={"retry-after": "30"})
    if mode == "busydate":  # the same, as an HTTP date (RFC 9110)
        body = b'{"error":{"message":"overloaded","type":"server_error"}}'
        when = email.utils.formatdate(time.time() + 30, usegmt=True)
        return Response(body, 503, headers={"retry-after": when})
    if mode == "slow":
        await asyncio.sleep(3)
    if mode == "garbage":
        return Response(b"<html>bad gateway</html>", 200, media_type="text/html")
    return None


def openai_app(state: FakeUpstream) -> Starlette:
    """An OpenAI-compatible upstream."""

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.last, state.count = body, state.count + 1
        state.cookie = request.headers.get("cookie")
        fault = await _faults(_mode(request))
        if fault is not None:
            return fault
        if (body.get("max_tokens") or 0) > 100_000:
            err = {
                "message": "max_tokens is too large",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "context_length_exceeded",
            }
            return Response(orjson.dumps({"error": err}), 400, media_type="application/json")
        text = "echo: " + _last_user_text(body.get("messages") or [])
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "stop"
        tools = body.get("tools")
        if tools and body.get("tool_choice") != "none":
            function = tools[0]["function"]
            args = orjson.dumps(_example(function.get("parameters"))).decode()
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": function["name"], "arguments": args},
                    }
                ],
            }
            finish = "tool_calls"
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            message["content"] = orjson.dumps(_example(fmt["json_schema"]["schema"])).decode()
        elif fmt.get("type") == "json_object":
            message["content"] = '{"answer": "x"}'
        n = body.get("n") or 1
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        base = {
            "id": "chatcmpl-fake",
            "created": int(time.time()),
            "model": body.get("model"),
            "system_fingerprint": "fp_fake",
        }
        if not body.get("stream"):
            choices = [
                {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                for i in range(n)
            ]
            out = {**base, "object": "chat.completion", "choices": choices, "usage": usage}
            if _mode(request) == "nousage":  # an upstream that never reports usage
                del out["usage"]
            response = Response(orjson.dumps(out), media_type="application/json")
            if _mode(request) == "cookie":
                response.set_cookie("upstream-session", f"caller-{state.count}")
            return response
        cut = _mode(request) == "cut"
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        include_usage = include_usage and _mode(request) != "nousage"

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            c = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            return b"data: " + orjson.dumps(c) + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            finished = False
            try:
                async for part in body_events():
                    yield part
                finished = True
            finally:
                if not finished:
                    state.streams_abandoned += 1

        async def body_events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""})
            if message.get("tool_calls"):
                call = {**message["tool_calls"][0], "index": 0}
                yield chunk({"tool_calls": [call]})
            else:
                for i, word in enumerate(message["content"].split(" ")):
                    yield chunk({"content": (" " if i else "") + word})
                    await asyncio.sleep(0.001)
                    if cut and i >= 1:
                        raise ConnectionResetError("scripted cut")
            yield chunk({}, finish)
            if include_usage:
                u = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                yield b"data: " + orjson.dumps(u) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def completions(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.last, state.count = body, state.count + 1
        fault = await _faults(_mode(request))
        if fault is not None:
            return fault
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        out = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "text": " world", "logprobs": None, "finish_reason": "stop"}],
            "usage": usage,
        }
        if not body.get("stream"):
            return Response(orjson.dumps(out), media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            yield b"data: " + orjson.dumps({**out, "usage": None}) + b"\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                yield b"data: " + orjson.dumps({**out, "choices": [], "usage": usage}) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.last, state.count = body, state.count + 1
        fault = await _faults(_mode(request))
        if fault is not None:
            return fault
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
            for i in range(len(inputs))
        ]
        out = {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
        return Response(orjson.dumps(out), media_type="application/json")

    async def last(request: Request) -> Response:
        seen = {"last": state.last, "count": state.count, "cookie": state.cookie}
        return Response(orjson.dumps(seen))

    routes = [Route("/_last", last)]
    prefixes = ("", "/fail500", "/slow", "/cut", "/garbage", "/ratelimited", "/cookie", "/nousage")
    prefixes += ("/busy", "/busydate")
    for prefix in prefixes:
        routes += [
            Route(prefix + "/v1/chat/completions", chat, methods=["POST"]),
            Route(prefix + "/v1/completions", completions, methods=["POST"]),
            Route(prefix + "/v1/embeddings", embeddings, methods=["POST"]),
        ]
    return Starlette(routes=routes)


def anthropic_app(state: FakeUpstream) -> Starlette:
    """An Anthropic Messages API upstream (as in the public API reference)."""

    async def messages(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.last, state.count = body, state.count + 1
        state.headers = dict(request.headers)
        if request.headers.get("x-api-key") != "test-anthropic-key":
            err = {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}
            return Response(orjson.dumps(err), 401, media_type="application/json")
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                err = {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": f"{field}: required"},
                }
                return Response(orjson.dumps(err), 400, media_type="application/json")
        fault = await _faults(_mode(request))
        if fault is not None:
            return fault
        last_text = ""
        last = body["messages"][-1]["content"]
        for block in [{"type": "text", "text": last}] if isinstance(last, str) else last:
            if block.get("type") == "text":
                last_text = block["text"]
        content: list[dict[str, Any]]
        if body.get("tools"):
            tool = body["tools"][0]
            content = [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": tool["name"],
                    "input": _example(tool["input_schema"]),
                },
            ]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": "echo: " + last_text}]
            stop = "end_turn"
        if body.get("thinking"):  # extended thinking: a signed thinking block comes first
            content.insert(0, {"type": "thinking", "thinking": "Hmm, an echo.", "signature": "s1"})
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 21, "output_tokens": 9},
        }
        if not body.get("stream"):
            return Response(orjson.dumps(message), media_type="application/json")
        cut = _mode(request) == "cut"

        async def events() -> AsyncIterator[bytes]:
            def ev(kind: str, data: dict[str, Any]) -> bytes:
                return (
                    f"event: {kind}\ndata: ".encode()
                    + orjson.dumps({"type": kind, **data})
                    + b"\n\n"
                )

            start = {
                **message,
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 21, "output_tokens": 1},
            }
            yield ev("message_start", {"message": start})
            yield ev("ping", {})
            for i, block in enumerate(content):
                if block["type"] == "text":
                    yield ev(
                        "content_block_start",
                        {"index": i, "content_block": {"type": "text", "text": ""}},
                    )
                    for j, word in enumerate(block["text"].split(" ")):
                        delta = {"type": "text_delta", "text": (" " if j else "") + word}
                        yield ev("content_block_delta", {"index": i, "delta": delta})
                        if cut and j >= 1:
                            raise ConnectionResetError("scripted cut")
                elif block["type"] == "thinking":
                    start_block = {"type": "thinking", "thinking": "", "signature": ""}
                    yield ev("content_block_start", {"index": i, "content_block": start_block})
                    delta = {"type": "thinking_delta", "thinking": block["thinking"]}
                    yield ev("content_block_delta", {"index": i, "delta": delta})
                    delta = {"type": "signature_delta", "signature": block["signature"]}
                    yield ev("content_block_delta", {"index": i, "delta": delta})
                else:
                    start_block = {**block, "input": {}}
                    yield ev("content_block_start", {"index": i, "content_block": start_block})
                    raw = orjson.dumps(block["input"]).decode()
                    for part in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                        delta = {"type": "input_json_delta", "partial_json": part}
                        yield ev("content_block_delta", {"index": i, "delta": delta})
                yield ev("content_block_stop", {"index": i})
            yield ev(
                "message_delta",
                {
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": 9},
                },
            )
            yield ev("message_stop", {})

        return StreamingResponse(events(), media_type="text/event-stream")

    async def last(request: Request) -> Response:
        seen = {"last": state.last, "count": state.count, "cookie": state.cookie}
        return Response(orjson.dumps(seen))

    routes = [Route("/_last", last)]
    for prefix in ("", "/fail500", "/slow", "/cut", "/garbage", "/ratelimited", "/cookie"):
        routes.append(Route(prefix + "/v1/messages", messages, methods=["POST"]))
    return Starlette(routes=routes)


@contextmanager
def serve_in_thread(app: Starlette) -> Iterator[str]:
    """Run an ASGI app on a real port in a background thread; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("fake upstream did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
