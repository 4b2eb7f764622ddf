"""Prometheus instruments. Labels are bounded: model names from the policy, backends, tiers,
teams, status classes and reasons, never prompts, keys or request ids."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

from gateway.metrics_resilience import ResilienceMetrics

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
SCORE_BUCKETS = tuple(round(i / 10, 1) for i in range(1, 11))


def multiprocess_dir() -> str | None:
    """The directory prometheus-client shares between workers, if running several."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _cache_children(metric: Any) -> None:
    """Memoise `metric.labels(...)`: its validation and locking cost ~4x the update itself.

    Safe because every label value here comes from a bounded set and no child is removed.
    """
    children: dict[tuple[str, ...], Any] = {}
    make = metric.labels

    def labels(*values: str) -> Any:
        child = children.get(values)
        if child is None:
            child = children[values] = make(*values)
        return child

    metric.labels = labels


class Metrics(ResilienceMetrics):
    """Every instrument the gateway updates, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests_total",
            "Requests answered, by model asked for, backend, tier and HTTP status class.",
            ["endpoint", "model", "backend", "tier", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds",
            "End-to-end time from request received to response complete.",
            ["endpoint", "model", "tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "Streams: time from request received to the first event sent to the client.",
            ["model", "tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds",
            "Time spent waiting on a backend, per attempt.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Time the gateway itself added: end-to-end minus upstream time.",
            ["endpoint"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "gateway_tokens_total",
            "Tokens reported by backends, by kind (prompt or completion).",
            ["backend", "tier", "team", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "gateway_cost_usd_total",
            "Spend in USD at the policy's prices.",
            ["backend", "tier", "team"],
            registry=r,
        )
        self.savings = Counter(
            "gateway_savings_usd_total",
            "Counterfactual cost on the savings reference backend minus actual cost, in USD.",
            ["tier", "team"],
            registry=r,
        )
        self.baseline_cost = Counter(
            "gateway_baseline_cost_usd_total",
            "What the same tokens would have cost on the savings reference backend, in USD.",
            ["team"],
            registry=r,
        )
        self.decisions = Counter(
            "gateway_routing_decisions_total",
            "Routing decisions: reason is rule, calibration, default, alias, fallback or cache.",
            ["model", "tier", "reason"],
            registry=r,
        )
        self.difficulty = Histogram(
            "gateway_difficulty_score",
            "Difficulty scores of classified requests.",
            ["model"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.closed_share = Gauge(
            "gateway_closed_share_ratio",
            "Realised share of recent requests routed to the closed tier.",
            ["model"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.closed_share_target = Gauge(
            "gateway_closed_share_target_ratio",
            "Target closed-tier share set by the policy.",
            ["model"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.calibrated_threshold = Gauge(
            "gateway_calibrated_threshold",
            "Difficulty threshold currently derived from the closed-share target.",
            ["model"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.cache = Counter(
            "gateway_cache_requests_total",
            "Cache lookups by result (hit, miss, bypass) and kind (exact, semantic).",
            ["model", "result", "kind"],
            registry=r,
        )
        self.cache_errors = Counter(
            "gateway_cache_errors_total",
            "Cache operations that failed or timed out and were skipped.",
            ["operation"],
            registry=r,
        )
        self.fallbacks = Counter(
            "gateway_fallbacks_total",
            "Requests moved from one backend to the next, by reason.",
            ["from_backend", "to_backend", "reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total",
            "Failed backend attempts by kind (connect, timeout, status_5xx, status_4xx, ...).",
            ["backend", "kind"],
            registry=r,
        )
        self.backend_up = Gauge(
            "gateway_backend_up",
            "1 when a backend is enabled and its circuit is closed, else 0.",
            ["backend", "tier"],
            registry=r,
            multiprocess_mode="min",
        )
        self.backend_enabled = Gauge(
            "gateway_backend_enabled",
            "1 when a backend may take traffic (the API key it needs is set), else 0.",
            ["backend", "tier"],
            registry=r,
            multiprocess_mode="min",
        )
        self.in_flight = Gauge(
            "gateway_backend_in_flight",
            "Requests in flight per backend.",
            ["backend"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejections = Counter(
            "gateway_rejections_total",
            "Requests refused before routing, by reason (auth, rate_limit, budget, invalid).",
            ["team", "reason"],
            registry=r,
        )
        self.limit_local = Counter(
            "gateway_limit_local_decisions_total",
            "Limit checks this process decided alone (its share) because Redis was slow or down.",
            ["team", "result"],
            registry=r,
        )
        self.budget_remaining = Gauge(
            "gateway_budget_remaining_usd",
            "What is left of a team's budget for the current period (day or month), in USD.",
            ["team", "period"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.limit_spend_replayed = Counter(
            "gateway_limit_spend_replayed_usd_total",
            "Spend recorded in Redis late: settled while Redis was away, replayed on its return.",
            ["team"],
            registry=r,
        )
        self.limit_spend_lost = Counter(
            "gateway_limit_spend_lost_usd_total",
            "Spend that never reached Redis (the replay journal overflowed).",
            ["team"],
            registry=r,
        )
        self.policy_reloads = Counter(
            "gateway_policy_reloads_total",
            "Policy reload attempts by result (ok, error).",
            ["result"],
            registry=r,
        )
        # The routing loop: shadow calls, judged labels, what they say about the score.
        self.shadow = Counter(
            "gateway_shadow_requests_total",
            "Shadow evaluations by outcome (labelled, failed, dropped_busy, dropped_budget).",
            ["model", "outcome"],
            registry=r,
        )
        self.shadow_cost = Counter(
            "gateway_shadow_cost_usd_total",
            "USD spent on shadow calls and their judges (not part of gateway_cost_usd_total).",
            ["backend", "purpose"],
            registry=r,
        )
        self.labels_made = Counter(
            "gateway_labels_total",
            "Label records by verdict source (identical, schema, tools, judge, feedback).",
            ["model", "source"],
            registry=r,
        )
        self.labels_by_decile = Counter(
            "gateway_label_decile_total",
            "Judged shadow pairs by difficulty decile of the request, the tier it was routed "
            "to, and outcome (open_worse when the label is at least 0.5, else open_ok).",
            ["decile", "tier", "outcome"],
            registry=r,
        )
        self.shadow_cap = Gauge(
            "gateway_shadow_cap_usd",
            "The policy's daily cap on shadow spend, by scope (a model name, or * policy-wide).",
            ["scope"],
            registry=r,
            multiprocess_mode="max",
        )
        self.adaptations = Counter(
            "gateway_adaptations_total",
            "Live adaptation rounds by result "
            "(adapted, recalibrated, kept, too_few, busy, failed).",
            ["result"],
            registry=r,
        )
        self.decisions_lost = Counter(
            "gateway_decision_records_lost_total",
            "Decision records not written: dropped (buffer full) or failed (file or Redis error).",
            ["reason"],
            registry=r,
        )
        self.build_info = Gauge(
            "gateway_build_info",
            "Always 1; labels carry the gateway version, policy version and classifier version.",
            ["version", "policy_version", "classifier_version"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self._resilience(r)
        for metric in vars(self).values():
            if metric is not self.registry:
                _cache_children(metric)


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The exposition text: merged over workers when running multi-process."""
    if multiprocess_dir():
        merged = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged), CONTENT_TYPE_LATEST
    return generate_latest(registry), CONTENT_TYPE_LATEST
