"""Scripted closed-tier backend and judge for the routing-loop tests.

The closed backend answers "closed: <last user text>" (or echoes it, like the open tier, when
the text contains SAME); the judge prefers, clearly, the answer that starts with "closed:"
when the request contains HARD, and calls everything else a tie.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Scripted:
    """What the closed backend and the judge saw."""

    closed_calls: list[float] = field(default_factory=list)  # monotonic time each answered
    closed_done: dict[str, float] = field(default_factory=dict)  # last user text → that time
    judge_prompts: list[str] = field(default_factory=list)
    closed_delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _completion(text: str) -> bytes:
    return orjson.dumps(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
        }
    )


def scripted_app(state: Scripted) -> Starlette:
    async def closed(request: Request) -> Response:
        body = orjson.loads(await request.body())
        await asyncio.sleep(state.closed_delay_s)
        last = body["messages"][-1]["content"]
        text = "echo: " + last if "SAME" in last else "closed: " + last
        with state.lock:
            state.closed_calls.append(time.monotonic())
            state.closed_done[last] = state.closed_calls[-1]
        return Response(_completion(text), media_type="application/json")

    async def judge(request: Request) -> Response:
        body = orjson.loads(await request.body())
        prompt = body["messages"][-1]["content"]
        with state.lock:
            state.judge_prompts.append(prompt)
        a = re.search(r"## Answer A\n(.*?)\n\n## Answer B", prompt, re.DOTALL)
        first_is_closed = a is not None and a.group(1).startswith("closed:")
        if "HARD" in prompt:
            verdict = {"better": "A" if first_is_closed else "B", "margin": "clear"}
        else:
            verdict = {"better": "tie", "margin": "slight"}
        return Response(_completion(orjson.dumps(verdict).decode()), media_type="application/json")

    return Starlette(
        routes=[
            Route("/closed/v1/chat/completions", closed, methods=["POST"]),
            Route("/judge/v1/chat/completions", judge, methods=["POST"]),
        ]
    )
