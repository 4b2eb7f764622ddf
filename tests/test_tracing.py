"""Traces, opt-in: a real OTLP/HTTP receiver gets one span per request that continues the
caller's `traceparent`, carries the GenAI attributes and the decision, and whose context the
backend receives."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import Connect, run_gateway
from tests.support.fake_upstreams import serve_in_thread

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@dataclass
class Seen:
    spans: list[Any] = field(default_factory=list)
    upstream_traceparents: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _app(seen: Seen) -> Starlette:
    async def traces(request: Request) -> Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.body())
        with seen.lock:
            for resource in export.resource_spans:
                for scope in resource.scope_spans:
                    seen.spans.extend(scope.spans)
        return Response(b"", media_type="application/x-protobuf")

    async def chat(request: Request) -> Response:
        await request.body()
        seen.upstream_traceparents.append(request.headers.get("traceparent"))
        answer = {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/traces", traces, methods=["POST"]),
            Route("/up/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


@pytest.fixture
def receiver() -> Iterator[tuple[Seen, str]]:
    seen = Seen()
    with serve_in_thread(_app(seen)) as url:
        yield seen, url


def _attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = (
            [v.string_value for v in value.array_value.values]
            if kind == "array_value"
            else getattr(value, kind)
        )
    return out


def test_spans_continue_the_callers_trace_and_carry_the_decision(
    receiver: tuple[Seen, str], tmp_path: Path, connect: Connect
) -> None:
    seen, url = receiver
    policy = f"""
backends:
  open: {{provider: openai, base_url: "{url}/up/v1", model: open-model, tier: open}}
models:
  auto: {{to: [open]}}
"""
    env = {"GATEWAY_OTLP_ENDPOINT": url + "/v1/traces", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with run_gateway(policy, env, tmp=tmp_path) as gateway:
        client = connect(gateway)
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Prove it."}],
            temperature=0.3,
            extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"},
        )
        missing = httpx.post(
            gateway + "/v1/chat/completions", json={"model": "nope", "messages": []}
        )
        assert missing.status_code == 400
        deadline = time.monotonic() + 15
        while len(seen.spans) < 2:
            assert time.monotonic() < deadline, "no spans exported"
            time.sleep(0.1)
    ok, bad = sorted(seen.spans, key=lambda s: s.start_time_unix_nano)[:2]
    assert ok.trace_id.hex() == TRACE_ID and ok.parent_span_id.hex() == PARENT
    assert ok.name == "chat auto"
    attrs = _attributes(ok)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "auto"
    assert attrs["gen_ai.response.model"] == "open-model"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (9, 2)
    assert attrs["gen_ai.request.temperature"] == pytest.approx(0.3)
    assert attrs["gateway.backend"] == "open" and attrs["gateway.tier"] == "open"
    assert 0.0 <= attrs["gateway.difficulty"] <= 1.0
    assert attrs["gateway.reason"] == "alias"
    assert attrs["http.response.status_code"] == 200
    # The backend continued the gateway's span: same trace, the gateway's span as parent.
    (upstream,) = seen.upstream_traceparents
    assert upstream is not None
    assert upstream.split("-")[1] == TRACE_ID and upstream.split("-")[2] == ok.span_id.hex()
    # An error is a span too, a new trace, with its status.
    assert bad.trace_id.hex() != TRACE_ID
    assert _attributes(bad)["error.type"] == "400"
