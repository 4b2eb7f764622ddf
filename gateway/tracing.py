"""OpenTelemetry traces, opt-in: one server span per request, with the GenAI conventions.

Off (no `GATEWAY_OTLP_ENDPOINT`) nothing is imported and the request path pays one `is None`
test. On, each request gets a span that continues the caller's `traceparent`, whose context
is passed to the backend (`traceparent` on the upstream call), and that carries
`gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.response.model`,
`gen_ai.provider.name`, `gen_ai.usage.input_tokens` / `output_tokens`, request parameters,
`http.response.status_code`, `error.type`, and the gateway's decision (`gateway.difficulty`,
`gateway.reason`, `gateway.backend`, `gateway.tier`, `gateway.cache`, `gateway.fallbacks`,
`gateway.classifier_version`). Spans are exported by the SDK's batch processor (OTLP over
HTTP, protobuf), off the request path.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.settings import Settings

_OPERATION = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
_REQUEST_FIELDS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "seed": "gen_ai.request.seed",
}


class Tracing:
    """The tracer, its exporter, and the propagator for `traceparent`."""

    def __init__(self, endpoint: str, service_name: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self._tracer = self._provider.get_tracer("gateway")
        self._propagator = TraceContextTextMapPropagator()
        self._server = SpanKind.SERVER

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracing | None:
        """Tracing when an OTLP endpoint is configured, else None (no cost)."""
        if not settings.otlp_endpoint:
            return None
        return cls(settings.otlp_endpoint, settings.otlp_service_name)

    def start(self, call: Call, traceparent: str | None) -> None:
        """Open the request's span (continuing ``traceparent``) and keep it on the call."""
        carrier = {"traceparent": traceparent} if traceparent else {}
        context = self._propagator.extract(carrier)
        span = self._tracer.start_span(
            call.endpoint, context=context, kind=self._server, start_time=time.time_ns()
        )
        call.span = span
        outgoing: dict[str, str] = {}
        from opentelemetry.trace import set_span_in_context

        self._propagator.inject(outgoing, context=set_span_in_context(span))
        call.traceparent = outgoing.get("traceparent")

    def finish(self, call: Call, backend_model: str | None, provider: str | None) -> None:
        """Name the span after what was asked, set what was decided, and end it."""
        span: Any = call.span
        if span is None:
            return
        operation = _OPERATION.get(call.endpoint, call.endpoint)
        span.update_name(f"{operation} {call.asked}".strip())
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": call.asked,
            "http.response.status_code": call.status,
            "gateway.backend": call.backend,
            "gateway.tier": call.tier,
            "gateway.cache": call.cache_result,
            "gateway.team": call.team,
        }
        for field, name in _REQUEST_FIELDS.items():
            value = call.body.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[name] = value
        if backend_model:
            attributes["gen_ai.response.model"] = backend_model
        if provider:
            attributes["gen_ai.provider.name"] = provider
        if call.backend != "-":
            attributes["gen_ai.usage.input_tokens"] = call.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = call.completion_tokens
        if call.score is not None:
            attributes["gateway.difficulty"] = call.score
            attributes["gateway.classifier_version"] = call.scorer
        if call.plan is not None:
            attributes["gateway.reason"] = (
                "cache" if call.cache_result == "hit" else call.plan.reason
            )
        elif call.cache_result == "hit":
            attributes["gateway.reason"] = "cache"
        if call.fallbacks:
            attributes["gateway.fallbacks"] = list(call.fallbacks)
        if call.status >= 400:
            from opentelemetry.trace import Status, StatusCode

            attributes["error.type"] = str(call.status)
            if call.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.set_attributes(attributes)
        span.end()

    def close(self) -> None:
        """Export what is buffered and stop."""
        self._provider.shutdown()
