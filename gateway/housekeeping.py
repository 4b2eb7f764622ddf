"""Exported state of a worker: build info, backend gauges, calibration shared through Redis."""

from __future__ import annotations

import asyncio
import time

from gateway import __version__, replicas
from gateway.breakers import State
from gateway.services import Services


def refresh_gauges(services: Services) -> None:
    """Backend state gauges from the breakers (kept off the request path)."""
    m = services.metrics
    now = time.monotonic()
    for name, backend in services.state.loaded.policy.backends.items():
        # A backend with replicas: up while one is, in flight what all of them are.
        ways = backend.replicas or (backend,)
        breakers = [services.breakers[way.key] for way in ways]
        circuits = [breaker.current(now) for breaker in breakers]
        usable = any(breaker.usable(now, backend.breaker) for breaker in breakers)
        m.backend_up.labels(name, backend.tier).set(1 if backend.enabled and usable else 0)
        m.breaker_state.labels(name).set(replicas.best(circuits).value)
        m.backend_enabled.labels(name, backend.tier).set(1 if backend.enabled else 0)
        m.in_flight.labels(name).set(sum(breaker.in_flight for breaker in breakers))
        if backend.replicas is not None:
            for i, circuit in enumerate(circuits):
                m.replica_up.labels(name, str(i)).set(1 if circuit is State.CLOSED else 0)


async def run(services: Services) -> None:
    """Every `calibration_sync_s`: gauges, lost decision records, each calibrator synced."""
    m = services.metrics
    lost = {"dropped": 0, "failed": 0}
    while True:
        await asyncio.sleep(services.settings.calibration_sync_s)
        refresh_gauges(services)
        try:
            await services.adapter.follow()
        except Exception:  # Redis trouble: keep serving the artifact we have
            m.cache_errors.labels("router_sync").inc()
        log = services.decisions
        if log is not None:
            for reason, now in (("dropped", log.dropped), ("failed", log.errors)):
                m.decisions_lost.labels(reason).inc(max(now - lost[reason], 0))
                lost[reason] = now
        for (model, rule), calibrator in list(services.state.calibrators.items()):
            if services.redis is not None:
                try:
                    await calibrator.sync(services.redis, f"gateway:calibration:{model}:{rule}")
                except Exception:  # Redis trouble must never stop routing
                    m.cache_errors.labels("calibration_sync").inc()
            m.closed_share.labels(model).set(calibrator.realised_share())
            m.calibrated_threshold.labels(model).set(calibrator.threshold())


def publish_info(services: Services) -> None:
    """Export build info and per-backend state for the current policy."""
    m = services.metrics
    # Not clear(): multiprocess mode cannot remove series, so the old one goes to 0.
    labels = (__version__, services.state.loaded.version, services.classifier.version)
    if services.info_labels is not None and services.info_labels != labels:
        m.build_info.labels(*services.info_labels).set(0)
    m.build_info.labels(*labels).set(1)
    services.info_labels = labels
    refresh_gauges(services)
    for (model, _), calibrator in services.state.calibrators.items():
        m.closed_share_target.labels(model).set(calibrator.target_share)
    policy = services.state.loaded.policy
    if policy.shadow is not None:
        m.shadow_cap.labels("*").set(policy.shadow.max_usd_per_day)
    for name, route in policy.models.items():
        if route.shadow is not None:
            m.shadow_cap.labels(name).set(route.shadow.max_usd_per_day)
