"""Process settings: from `GATEWAY_*` environment variables, never from the policy file."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "policies" / "default.yaml"


class Settings(BaseSettings):
    """Everything the process needs that is not routing policy."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    policy: Path = DEFAULT_POLICY
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # Redis for the cache and shared state; empty means in-process fallbacks.
    redis_url: str = ""
    redis_timeout_ms: float = 20.0
    admin_key: SecretStr | None = None
    # HMAC secret for API keys (policy-declared and /admin/keys); the key API needs it, and
    # every process sharing a Redis must have the same one. `openssl rand -hex 32`.
    key_secret: SecretStr | None = None
    # How often each worker checks whether keys made through /admin/keys changed.
    keys_refresh_s: float = 0.5
    # Revoked and expired keys: kept whole this long after revocation or expiry, then as a
    # tombstone (id, team, name, dates; no digest, models or limits) this much longer, then
    # deleted. Each worker looks for due records every `keys_purge_s`.
    keys_retention_s: float = 30 * 86400
    keys_tombstone_s: float = 90 * 86400
    keys_purge_s: float = 300.0
    # When set, /metrics wants `Authorization: Bearer <token>`.
    metrics_token: SecretStr | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    # Policy hot reload: how often the file's mtime is checked; 0 disables it.
    policy_reload_s: float = 2.0
    log_level: str = "info"
    # One JSON line per request on stderr.
    access_log: bool = True
    # Debug logging may include prompt text; never on by default.
    log_prompts: bool = False
    # The in-process cache used when no Redis is configured.
    cache_max_entries: int = 10_000
    cache_max_bytes: int = 256 * 1024 * 1024
    # Stored Responses (`store`, `previous_response_id`): in Redis when configured, else here.
    responses_ttl_s: int = 30 * 24 * 3600
    responses_max_entries: int = 10_000
    responses_max_bytes: int = 64 * 1024 * 1024
    upstream_max_connections: int = 512
    # A classifier artifact other than the one shipped in the package.
    classifier_artifact: Path | None = None
    # Closed-share calibration sync period through Redis.
    calibration_sync_s: float = 2.0
    # A request's time limit, streams included (0: none); `x-gateway-timeout-ms` may shorten it.
    request_timeout_s: float = 600.0
    # SIGTERM: requests in flight may finish for this long (Kubernetes' default grace is 30 s);
    # what still runs then ends with an error (an SSE error event on a stream).
    drain_grace_s: float = 30.0
    # SIGTERM: keep accepting connections this long (while load balancers catch up).
    drain_delay_s: float = 0.0
    # Breaker state shared by this replica's workers (set by `gateway serve --workers N`).
    breaker_file: Path | None = None
    # The routing loop's label stream (Redis, or an in-process ring) and how long requests
    # of teams that opted in to prompt retention are kept for feedback.
    labels_max: int = 100_000
    retain_s: int = 7 * 86400
    # Gateway processes sharing one Redis (replicas x workers is the divisor of each limit a
    # process enforces on its own while Redis is slow or down).
    replicas: int = 1
    # Limit checks wait this long for Redis before the process enforces its local share.
    limits_timeout_ms: float = 250.0
    # A budget reservation not settled within this time is released by Redis itself.
    limits_lease_s: float = 900.0
    # Each process takes this share of a large limit from Redis at once, divided by the
    # processes, and admits from it without a round trip (gateway/limits/slices.py); 0: off.
    limits_slice_share: float = 0.01
    # Decision records (one per request): rotating JSONL files here, and/or a bounded Redis
    # stream when Redis is configured; neither without a directory and Redis.
    decision_log_dir: Path | None = None
    decision_log_redis: bool = True
    # OpenTelemetry traces (off when empty): the OTLP/HTTP endpoint, e.g.
    # http://otel-collector:4318/v1/traces, and the service name spans carry.
    otlp_endpoint: str = ""
    otlp_service_name: str = "gateway"
