"""The instruments of breakers, health checks, spill-over and requests ended early."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ResilienceMetrics:
    """Part of `gateway.metrics.Metrics` (its own module to keep both small)."""

    def _resilience(self, r: CollectorRegistry) -> None:
        self.breaker_state = Gauge(
            "gateway_breaker_state",
            "Circuit state per backend: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            registry=r,
            # Workers share breaker state: the last write is the current state.
            multiprocess_mode="mostrecent",
        )
        self.breaker_transitions = Counter(
            "gateway_breaker_transitions_total",
            "Circuit state changes per backend, by the state entered.",
            ["backend", "state"],
            registry=r,
        )
        self.replica_up = Gauge(
            "gateway_backend_replica_up",
            "1 when a backend replica's circuit is closed, else 0 (backends with base_urls).",
            ["backend", "replica"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.replica_transitions = Counter(
            "gateway_backend_replica_transitions_total",
            "Circuit state changes of backend replicas, by the state entered (open: ejected).",
            ["backend", "replica", "state"],
            registry=r,
        )
        self.breaker_probes = Counter(
            "gateway_breaker_probes_total",
            "Requests admitted to a half-open circuit as probes, by result.",
            ["backend", "result"],
            registry=r,
        )
        self.health_checks = Counter(
            "gateway_health_checks_total",
            "Active health checks per backend, by result (ok, failed).",
            ["backend", "result"],
            registry=r,
        )
        self.spillovers = Counter(
            "gateway_spillovers_total",
            "Requests whose preferred backend was saturated, answered by another, by why "
            "(max_concurrency: in-flight requests; load: its own /metrics, policy `load:`).",
            ["from_backend", "to_backend", "reason"],
            registry=r,
        )
        self._load(r)
        self.retry_budget_exhausted = Counter(
            "gateway_retry_budget_exhausted_total",
            "Requests failed without trying their next target: the retry budget was spent "
            "(scope: request, max_attempts; worker, the retry ratio), by the last backend tried.",
            ["backend", "scope"],
            registry=r,
        )
        self.cancellations = Counter(
            "gateway_cancellations_total",
            "Requests ended by the gateway before their answer was complete, by reason.",
            ["reason"],
            registry=r,
        )

    def _load(self, r: CollectorRegistry) -> None:
        # The poller's last reading; workers share the poll, so the last write is current.
        self.backend_queue_waiting = Gauge(
            "gateway_backend_queue_waiting",
            "Requests waiting in the backend's queue (vllm:num_requests_waiting), last poll.",
            ["backend"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.backend_queue_running = Gauge(
            "gateway_backend_queue_running",
            "Requests the backend is running (vllm:num_requests_running), last poll.",
            ["backend"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.backend_kv_cache_usage = Gauge(
            "gateway_backend_kv_cache_usage_ratio",
            "The backend's KV cache use, 0-1 (vllm:kv_cache_usage_perc), at the last load poll.",
            ["backend"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.backend_saturated = Gauge(
            "gateway_backend_saturated",
            "1 while the backend's load poll finds it past its `load:` limits (traffic spills).",
            ["backend"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.load_changes = Counter(
            "gateway_backend_saturation_changes_total",
            "Load verdict changes per backend, by the state entered (saturated, recovered).",
            ["backend", "state"],
            registry=r,
        )
        self.load_polls = Counter(
            "gateway_load_polls_total",
            "Polls of a backend's /metrics (policy `load:`), by result (ok, failed).",
            ["backend", "result"],
            registry=r,
        )
