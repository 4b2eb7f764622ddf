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
            "Requests whose preferred backend was saturated, answered by another.",
            ["from_backend", "to_backend"],
            registry=r,
        )
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
