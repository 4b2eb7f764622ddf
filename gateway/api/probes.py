"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

import hmac
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.api.deps import ServicesDep
from gateway.breakers import Breaker, State
from gateway.errors import AuthenticationFailed
from gateway.metrics import render
from gateway.policy import Backend

router = APIRouter()


@router.get("/healthz")
async def healthz() -> Response:
    """The process is alive."""
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/readyz")
async def readyz(services: ServicesDep) -> Response:
    """Policy loaded, not draining, a backend usable; each backend's state and circuit."""
    policy = services.state.loaded.policy
    now = time.monotonic()
    backends: dict[str, dict[str, object]] = {}
    for name, backend in policy.backends.items():
        ways = backend.replicas or (backend,)
        shown = [_circuit(services.breakers[way.key], backend, now) for way in ways]
        # A backend with replicas: the best of theirs (ok while one replica is).
        entry = min(shown, key=lambda c: c["rank"])
        backends[name] = {"tier": backend.tier, "state": entry["state"], **entry["shown"]}
        if backend.replicas is not None:
            backends[name]["replicas"] = [
                {"replica": i, "state": c["state"], **c["shown"]} for i, c in enumerate(shown)
            ]
        if backend.load is not None:  # its own /metrics: saturated means traffic spills
            backends[name]["saturated"] = services.breakers[name].is_overloaded(now)
    usable = any(b["state"] in ("ok", "circuit half-open") for b in backends.values())
    ready = usable and not services.drain.draining
    closed_enabled = any(b.enabled for b in policy.backends.values() if b.tier == "closed")
    # A failed reload still serves the old policy (ready), but says so.
    status = "unavailable" if not ready else "degraded" if services.reload_error else "ready"
    if services.drain.draining:
        status = "draining"
    body = {
        "status": status,
        "policy_error": services.reload_error,
        "policy_version": services.state.loaded.version,
        "policy_file": services.state.loaded.source,
        "classifier_version": services.classifier.version,
        "cache": services.cache.kind,
        "backends": backends,
        "notes": []
        if closed_enabled
        else ["no closed-tier backend has an API key: all traffic is served by the open tier"],
    }
    return Response(orjson.dumps(body), 200 if ready else 503, media_type="application/json")


def _circuit(breaker: Breaker, backend: Backend, now: float) -> dict[str, Any]:
    """One circuit as /readyz shows it (``rank`` orders them: closed first)."""
    circuit = breaker.current(now)
    if not backend.enabled:
        state = "disabled: API key not set"
    elif circuit is State.CLOSED:
        state = "ok"
    else:
        state = f"circuit {circuit.name.lower().replace('_', '-')}"
    shown: dict[str, object] = {"circuit": circuit.name.lower()}
    if circuit is State.OPEN:
        shown["retry_after_s"] = round(breaker.retry_after(now), 3)
    return {"rank": circuit.value, "state": state, "shown": shown}


@router.get("/metrics")
async def metrics(services: ServicesDep, request: Request) -> Response:
    """Prometheus exposition; behind `Authorization: Bearer` when GATEWAY_METRICS_TOKEN is set."""
    token = services.settings.metrics_token
    if token is not None and token.get_secret_value():
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise AuthenticationFailed("A valid metrics token is required.", code="invalid_token")
    payload, content_type = render(services.metrics.registry)
    return Response(payload, media_type=content_type)
