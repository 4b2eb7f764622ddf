"""The state of one request as it moves through the pipeline, and how it is finished."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gateway.asgi import Reply
from gateway.auth import Tenant
from gateway.errors import GatewayError, UpstreamStatusError, upstream_error_body
from gateway.limits import Admission
from gateway.planner import Plan
from gateway.policy import Endpoint
from gateway.services import PolicyState, Services


@dataclass(slots=True)
class Call:
    """What the pipeline knows about one request as it goes."""

    endpoint: Endpoint
    request_id: str
    started: float
    state: PolicyState
    body: dict[str, Any] = field(default_factory=dict)
    asked: str = ""
    model: str = "-"
    tenant: Tenant | None = None
    stream: bool = False
    score: float | None = None
    plan: Plan | None = None
    upstream_s: float = 0.0
    overhead_s: float | None = None
    cache_result: str = "bypass"
    admission: Admission | None = None

    @property
    def team(self) -> str:
        """The metrics label of the caller's team."""
        return self.tenant.team if self.tenant is not None else "unknown"

    def headers(self, backend: str, tier: str) -> dict[str, str]:
        """The gateway's response headers for an answer from `backend`."""
        headers = {
            "x-request-id": self.request_id,
            "x-gateway-backend": backend,
            "x-gateway-tier": tier,
            "x-gateway-difficulty": "n/a" if self.score is None else f"{self.score:.4f}",
            "x-gateway-cache": self.cache_result,
        }
        if self.admission is not None:
            headers.update(self.admission.headers)
        return headers


def classify(services: Services, call: Call, known: float | None = None) -> None:
    """Score difficulty for chat and completions; embeddings are not classified.

    ``known``: a score computed earlier by the same classifier (a cache entry keeps one),
    taken as is instead of scoring again; it is observed all the same.
    """
    if call.endpoint == "embeddings":
        return
    call.score = services.classifier.score(call.body) if known is None else known
    services.metrics.difficulty.labels(call.model).observe(call.score)


def error_response(services: Services, call: Call, err: GatewayError) -> Reply:
    """Render an error, count it and log it."""
    body = upstream_error_body(err) if isinstance(err, UpstreamStatusError) else err.json()
    headers = {"x-request-id": call.request_id, **err.headers}
    if call.score is not None:
        headers["x-gateway-difficulty"] = f"{call.score:.4f}"
    finish(services, call, err.http_status, "-", "-")
    if err.http_status in (401, 403):
        services.metrics.rejections.labels(call.team, "auth").inc()
    elif call.plan is None and err.http_status in (400, 404, 413, 415):
        services.metrics.rejections.labels(call.team, "invalid").inc()
    return Reply(err.http_status, headers, body)


def finish(services: Services, call: Call, status: int, backend: str, tier: str) -> None:
    """Request-level metrics and the access log line."""
    elapsed = time.perf_counter() - call.started
    m = services.metrics
    m.requests.labels(call.endpoint, call.model, backend, tier, f"{status // 100}xx").inc()
    m.request_duration.labels(call.endpoint, call.model, tier).observe(elapsed)
    if call.overhead_s is not None:
        m.overhead.labels(call.endpoint).observe(call.overhead_s)
    elif call.upstream_s:
        m.overhead.labels(call.endpoint).observe(max(elapsed - call.upstream_s, 0.0))
    access = services.access_log
    if access is not None:
        entry: dict[str, Any] = {
            "msg": "request",
            "request_id": call.request_id,
            "endpoint": call.endpoint,
            "model": call.model,
            "backend": backend,
            "tier": tier,
            "status": status,
            "team": call.team,
            "cache": call.cache_result,
            "difficulty": call.score,
            "reason": call.plan.reason if call.plan is not None else None,
            "duration_ms": round(elapsed * 1000, 3),
        }
        if services.settings.log_prompts:
            entry["body"] = call.body
        access.write(entry)
