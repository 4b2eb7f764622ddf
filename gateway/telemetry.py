"""How a request is finished: request metrics and the access log line, exactly once."""

from __future__ import annotations

import time
from typing import Any

from gateway.call import Call
from gateway.decisions import DecisionRecord
from gateway.services import Services


def finish(services: Services, call: Call) -> None:
    """Request-level metrics and the access log line for a request that has ended."""
    elapsed = time.perf_counter() - call.started
    status = call.status
    m = services.metrics
    label = call.label
    m.requests.labels(label, call.model, call.backend, call.tier, f"{status // 100}xx").inc()
    m.request_duration.labels(label, call.model, call.tier).observe(elapsed)
    if call.overhead_s is not None:
        m.overhead.labels(label).observe(call.overhead_s)
    elif call.upstream_s:
        m.overhead.labels(label).observe(max(elapsed - call.upstream_s, 0.0))
    if status in (401, 403):
        m.rejections.labels(call.team, "auth").inc()
    elif call.plan is None and status in (400, 404, 413):
        m.rejections.labels(call.team, "invalid").inc()
    if services.decisions is not None:
        services.decisions.write(_decision(services, call, elapsed))
    if services.tracing is not None:
        backend = call.state.loaded.policy.backends.get(call.backend)
        model = (backend.model or call.asked) if backend is not None else None
        services.tracing.finish(call, model, backend.provider if backend is not None else None)
    access = services.access_log
    if access is None:
        return
    entry: dict[str, Any] = {
        "msg": "request",
        "request_id": call.request_id,
        "endpoint": label,
        "model": call.model,
        "backend": call.backend,
        "tier": call.tier,
        "status": status,
        "team": call.team,
        "key_id": call.key_name,
        "cache": call.cache_result,
        "difficulty": call.score,
        "reason": call.plan.reason if call.plan is not None else None,
        "duration_ms": round(elapsed * 1000, 3),
    }
    if services.settings.log_prompts:
        entry["body"] = call.body
    access.write(entry)


def _decision(services: Services, call: Call, elapsed: float) -> DecisionRecord:
    """The request's decision record (the DESIGN.md contract); never its prompt."""
    plan = call.plan
    if call.cache_result == "hit":
        reason = "cache"
    elif plan is None:
        reason = "-"
    elif call.fallbacks and call.status < 400:
        reason = "fallback"
    else:
        reason = plan.reason
    return DecisionRecord(
        ts=time.time() - elapsed,
        request_id=call.request_id,
        team=call.team,
        model=call.asked or call.model,
        endpoint=call.endpoint,
        score=call.score,
        backend=call.backend,
        tier=call.tier,
        reason=reason,
        fallbacks=tuple(call.fallbacks),
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        cost_usd=call.cost_usd,
        reference_cost_usd=call.reference_cost_usd,
        cache=call.cache_result,
        status=call.status,
        latency_ms=round(elapsed * 1000, 3),
        policy_version=call.state.loaded.version,
        classifier_version=services.classifier.version,
        key_id=call.key_name,
    )
