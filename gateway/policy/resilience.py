"""A backend's timeouts, concurrency and load limits, breaker, health check (policy keys)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
    # Error ratio: the circuit also opens when at least `failure_ratio` of the last
    # `ratio_window_s` seconds' attempts failed, once they number `ratio_min_requests`.
    failure_ratio: float = Field(0.5, gt=0, le=1)
    ratio_min_requests: int = Field(20, ge=1)
    ratio_window_s: float = Field(10.0, gt=0, le=60)


class HealthCheck(_Strict):
    """An active check: GET base_url + path every interval; a failure opens the circuit."""

    path: str = "/models"
    interval_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(1.0, gt=0)
    # Consecutive failed checks that open the circuit.
    failures: int = Field(2, ge=1)


class LoadPolicy(_Strict):
    """Load-aware spill-over: poll the backend's Prometheus `/metrics` (vLLM's queue and cache).

    Saturated once a polled value passes its `max_*`; saturated again only after every value
    has fallen to `recover_at` of its limit or below (hysteresis: no flapping at the edge).
    """

    # Default: the server root of base_url + /metrics (vLLM serves it there, not under /v1).
    metrics_url: str | None = None
    interval_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(0.5, gt=0)
    # `vllm:num_requests_waiting` above this: saturated.
    max_waiting: float | None = Field(None, ge=0)
    # `vllm:num_requests_running` above this (rarely needed: max_num_seqs bounds it).
    max_running: float | None = Field(None, ge=0)
    # `vllm:kv_cache_usage_perc` (0-1; `gpu_cache_usage_perc` before vLLM 0.10) above this.
    max_kv_cache: float | None = Field(None, gt=0, le=1)
    # Share of each limit every value must be back to before the backend counts as ready.
    recover_at: float = Field(0.8, gt=0, le=1)
    # When no ready target is left (a `data_residency: self_hosted` team, every target full):
    # `queue` sends it to the saturated backend anyway; `reject` answers 503 + retry-after.
    when_saturated: Literal["queue", "reject"] = "queue"

    @field_validator("metrics_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("metrics_url must be an http:// or https:// URL")
        return url

    @model_validator(mode="after")
    def _some_limit(self) -> LoadPolicy:
        if self.max_waiting is None and self.max_running is None and self.max_kv_cache is None:
            raise ValueError("give at least one of max_waiting, max_running, max_kv_cache")
        return self


class Retries(_Strict):
    """How many targets one request may try, and how many retries a worker may send."""

    # Targets one request tries at most (the first attempt included).
    max_attempts: int = Field(3, ge=1)
    # Retries (attempts after a request's first) per worker, over the last `window_s`: at most
    # `ratio` of the first attempts plus `min_per_s` a second, so an outage does not double load.
    ratio: float = Field(0.2, ge=0)
    min_per_s: float = Field(3.0, ge=0)
    window_s: float = Field(10.0, gt=0, le=60)
    # Longest an upstream's `Retry-After` (on a 429 or 503) keeps a backend aside.
    max_retry_after_s: float = Field(60.0, ge=0)


class BreakerSharing(_Strict):
    """Who shares circuit state: the workers of one gateway replica, or every replica."""

    # local: the workers of one replica (a mapped file); redis: also every replica on the
    # same Redis (state changes published, a background sync applies the others').
    shared: Literal["local", "redis"] = "local"


class PolicyResilience(_Strict):
    """The policy-wide keys `Policy` takes from here (see docs/policy.md)."""

    retries: Retries = Retries()
    breakers: BreakerSharing = BreakerSharing()


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
    # Spill-over on the backend's own queue and KV cache (its `/metrics`): see LoadPolicy.
    load: LoadPolicy | None = None
