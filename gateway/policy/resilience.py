"""A backend's timeouts, concurrency limit, circuit breaker and health check (policy keys)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BreakerPolicy(_Strict):
    """When a backend's circuit opens, how long it stays open, how many probes it admits."""

    # Consecutive failures (connect, timeout, 5xx, 429, bad answer) that open the circuit.
    failures_to_open: int = Field(3, ge=1)
    # Time open before half-open, when a few probe requests may reach it again.
    open_s: float = Field(5.0, gt=0)
    # Requests admitted at a time while half-open; the rest go to the next target.
    half_open_probes: int = Field(1, ge=1)


class HealthCheck(_Strict):
    """An active check: GET base_url + path every interval; a failure opens the circuit."""

    path: str = "/models"
    interval_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(1.0, gt=0)
    # Consecutive failed checks that open the circuit.
    failures: int = Field(2, ge=1)


class BackendResilience(_Strict):
    """The keys `Backend` takes from here (see docs/policy.md)."""

    # Per attempt: a whole (non-streaming) answer; connecting.
    timeout_s: float = Field(60.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    # Streams, per attempt: to the first event, then between events. Unset: min(timeout_s, 30).
    first_token_timeout_s: float | None = Field(None, gt=0)
    idle_timeout_s: float | None = Field(None, gt=0)
    # At this many in-flight requests (per worker) the backend is saturated: traffic spills.
    max_concurrency: int | None = Field(None, ge=1)
    breaker: BreakerPolicy = BreakerPolicy()
    health_check: HealthCheck | None = None
