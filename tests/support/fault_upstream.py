"""A scripted OpenAI-compatible upstream whose faults can be changed while a test runs.

Each path prefix is a *lane* (`/<lane>/v1/chat/completions`, `/<lane>/v1/models`) with its
own script, set with `FaultUpstream.script(lane, ...)`:

- `mode`: `ok` (answer), `fail500`, or `hang` (accept, then never answer; the handler waits
  for the client to leave and records it);
- `delay_s`: wait before the answer (or before the first stream event);
- `chunks`, `gap_s`: a stream's content events and the pause between them;
- `stall_after`: a stream stops (and hangs) after this many content events.

`GET /<lane>/metrics` (where a backend's `load:` poll looks by default) serves
`Lane.metrics` as Prometheus text, or a 500 while it is None; each poll is counted.

Per lane it records requests, in-flight and peak concurrency, answers completed, and
requests the client left before they were complete (`cancelled`, with the time of each).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.fake_upstreams import serve_in_thread

HANG_S = 30.0


@dataclass
class Script:
    """What a lane does with the next requests."""

    mode: str = "ok"
    delay_s: float = 0.0
    chunks: int = 3
    gap_s: float = 0.0
    stall_after: int | None = None


@dataclass
class Lane:
    """A lane's script and what it saw."""

    script: Script = field(default_factory=Script)
    requests: int = 0
    in_flight: int = 0
    peak: int = 0
    completed: int = 0
    cancelled: list[float] = field(default_factory=list)
    checks: int = 0
    # What `/<lane>/metrics` serves (None: a 500), and how often it was asked.
    metrics: bytes | None = None
    polls: int = 0


class FaultUpstream:
    """The lanes of one scripted server (state shared with its handler thread)."""

    def __init__(self) -> None:
        self.lanes: dict[str, Lane] = {}
        self.url = ""

    def lane(self, name: str) -> Lane:
        """A lane's state (created on first use)."""
        return self.lanes.setdefault(name, Lane())

    def script(self, name: str, **script: Any) -> Lane:
        """Replace a lane's script and reset what it recorded."""
        self.lanes[name] = Lane(Script(**script))
        return self.lanes[name]

    def queue(self, name: str, waiting: float, running: float = 1.0, kv: float = 0.1) -> None:
        """Have the lane's `/metrics` report this load, as vLLM would."""
        lane = self.lane(name)
        lane.metrics = (
            f'vllm:num_requests_waiting{{engine="0",model_name="f"}} {waiting}\n'
            f'vllm:num_requests_running{{engine="0",model_name="f"}} {running}\n'
            f'vllm:kv_cache_usage_perc{{engine="0",model_name="f"}} {kv}\n'
        ).encode()

    def base_url(self, name: str) -> str:
        """The `base_url` a policy gives a backend on this lane."""
        return f"{self.url}/{name}/v1"


def _chunk(text: str | None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    event = {"id": "chatcmpl-f", "object": "chat.completion.chunk", "created": 0, "model": "f"}
    return b"data: " + orjson.dumps({**event, "choices": [choice]}) + b"\n\n"


_ANSWER = {
    "id": "chatcmpl-f",
    "object": "chat.completion",
    "created": 0,
    "model": "f",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "ok"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def fault_app(upstream: FaultUpstream) -> Starlette:
    """The server's routes."""

    async def hang(request: Request) -> bool:
        """Never answer; True once the client has hung up."""
        try:
            async with asyncio.timeout(HANG_S):
                while (await request.receive())["type"] != "http.disconnect":
                    pass
        except TimeoutError:
            return False
        return True

    async def chat(request: Request) -> Response:
        lane = upstream.lane(request.path_params["lane"])
        script = lane.script
        body = orjson.loads(await request.body())
        lane.requests += 1
        lane.in_flight += 1
        lane.peak = max(lane.peak, lane.in_flight)
        try:
            if script.mode == "hang":
                if await hang(request):
                    lane.cancelled.append(time.monotonic())
                return Response(b"{}", 504)
            if script.delay_s:
                await asyncio.sleep(script.delay_s)
            if script.mode == "fail500":
                return Response(b'{"error":{"message":"scripted","type":"server_error"}}', 500)
            if not body.get("stream"):
                lane.completed += 1
                return Response(orjson.dumps(_ANSWER), media_type="application/json")
        finally:
            if script.mode != "ok" or not body.get("stream"):
                lane.in_flight -= 1
        return StreamingResponse(_events(lane, script), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        lane = upstream.lane(request.path_params["lane"])
        lane.checks += 1
        if lane.script.mode == "hang":
            await hang(request)
            return Response(b"{}", 504)
        if lane.script.mode == "fail500":
            return Response(b"{}", 500)
        return Response(b'{"object":"list","data":[{"id":"f","object":"model"}]}')

    async def metrics(request: Request) -> Response:
        lane = upstream.lane(request.path_params["lane"])
        lane.polls += 1
        if lane.metrics is None:
            return Response(b"scripted failure", 500)
        return Response(lane.metrics, media_type="text/plain; version=0.0.4")

    return Starlette(
        routes=[
            Route("/{lane}/v1/chat/completions", chat, methods=["POST"]),
            Route("/{lane}/v1/models", models, methods=["GET"]),
            Route("/{lane}/metrics", metrics, methods=["GET"]),
        ]
    )


async def _events(lane: Lane, script: Script) -> AsyncIterator[bytes]:
    finished = False
    try:
        yield _chunk("")
        for i in range(script.chunks):
            if script.stall_after is not None and i >= script.stall_after:
                await asyncio.sleep(HANG_S)
            if i and script.gap_s:
                await asyncio.sleep(script.gap_s)
            yield _chunk(f"w{i} ")
        yield _chunk(None, "stop")
        yield b"data: [DONE]\n\n"
        finished = True
        lane.completed += 1
    finally:
        lane.in_flight -= 1
        if not finished:
            lane.cancelled.append(time.monotonic())


@contextmanager
def fault_upstream() -> Iterator[FaultUpstream]:
    """Serve a `FaultUpstream` on a free port for the duration of the block."""
    upstream = FaultUpstream()
    with serve_in_thread(fault_app(upstream)) as url:
        upstream.url = url
        yield upstream
