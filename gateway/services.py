"""The long-lived objects of one worker, built by the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.auth import KeyRing
from gateway.cache import ResponseCache, build_cache
from gateway.difficulty import DifficultyClassifier, ShareCalibrator
from gateway.errors import PolicyError
from gateway.health import HealthBoard
from gateway.limits import Limiter
from gateway.log import AccessLog
from gateway.metrics import Metrics
from gateway.policy import CachePolicy, LoadedPolicy, load_policy
from gateway.providers import PROVIDERS, Provider, UpstreamClient
from gateway.semantic import SemanticIndex
from gateway.settings import Settings

log = logging.getLogger("gateway.services")


@dataclass
class PolicyState:
    """A loaded policy and everything derived from it; swapped whole on reload."""

    loaded: LoadedPolicy
    keys: KeyRing
    calibrators: dict[tuple[str, int], ShareCalibrator] = field(default_factory=dict)
    # Cache settings per model: the policy-wide ones overridden by the model's own.
    cache: dict[str, CachePolicy] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        loaded: LoadedPolicy,
        prior: list[float] | None = None,
        previous: PolicyState | None = None,
    ) -> PolicyState:
        """Derive key lookups and calibrators; keep calibrators whose target did not change.

        `prior` is the training score distribution: until enough traffic has been seen, the
        calibrated threshold leans on it instead of on a handful of requests.
        """
        old = previous.calibrators if previous is not None else {}
        calibrators: dict[tuple[str, int], ShareCalibrator] = {}
        for model, route in loaded.policy.models.items():
            for i, rule in enumerate(route.rules):
                share = rule.when.closed_share if rule.when is not None else None
                if share is None:
                    continue
                kept = old.get((model, i))
                calibrators[(model, i)] = (
                    kept
                    if kept is not None and kept.target_share == share
                    else ShareCalibrator(share, prior=prior)
                )
        policy = loaded.policy
        cache = {}
        for model, route in policy.models.items():
            merged = policy.cache.model_dump(exclude_none=True)
            if route.cache is not None:
                merged.update(route.cache.model_dump(exclude_none=True))
            cache[model] = CachePolicy(**merged)
        return cls(loaded, KeyRing(policy), calibrators, cache)


class Services:
    """Shared HTTP client, providers, policy, classifier, cache and metrics."""

    def __init__(
        self,
        settings: Settings,
        state: PolicyState,
        classifier: DifficultyClassifier,
        client: UpstreamClient,
        cache: ResponseCache,
        metrics: Metrics,
        redis: Any = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.classifier = classifier
        self.client = client
        self.providers: dict[str, Provider] = {
            name: factory(client) for name, factory in PROVIDERS.items()
        }
        self.cache = cache
        self.metrics = metrics
        self.redis = redis
        self.health = HealthBoard()
        self.semantic = SemanticIndex()
        self.limiter = Limiter.from_settings(redis, settings, metrics)
        self._tasks: list[asyncio.Task[None]] = []
        self._info_labels: tuple[str, str, str] | None = None
        # One JSON line per request unless access logging is off.
        self.access_log = AccessLog() if settings.access_log else None

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics) -> Services:
        """Load policy and classifier, open clients, start background tasks."""
        loaded = load_policy(settings.policy)
        classifier = await asyncio.to_thread(
            DifficultyClassifier.load, settings.classifier_artifact
        )
        client = UpstreamClient(settings.upstream_max_connections)
        redis = None
        if settings.redis_url:
            import redis.asyncio as aioredis

            redis = aioredis.from_url(
                settings.redis_url,
                socket_timeout=settings.redis_timeout_ms / 1000,
                socket_connect_timeout=settings.redis_timeout_ms / 1000,
            )
        cache = build_cache(settings, redis, metrics)
        state = PolicyState.build(loaded, classifier.artifact.score_prior.tolist())
        services = cls(settings, state, classifier, client, cache, metrics, redis)
        services.publish_info()
        if settings.policy_reload_s > 0:
            services._tasks.append(asyncio.create_task(services._watch_policy()))
        services._tasks.append(asyncio.create_task(services._housekeeping()))
        return services

    async def close(self) -> None:
        """Stop background tasks and close connections."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()
        await self.limiter.close()
        if self.access_log is not None:
            self.access_log.close()
        if self.redis is not None:
            await self.redis.aclose()

    def publish_info(self) -> None:
        """Export build info and per-backend state for the current policy."""
        m = self.metrics
        # Not clear(): multiprocess mode cannot remove series, so the old one goes to 0.
        labels = (__version__, self.state.loaded.version, self.classifier.version)
        if self._info_labels is not None and self._info_labels != labels:
            m.build_info.labels(*self._info_labels).set(0)
        m.build_info.labels(*labels).set(1)
        self._info_labels = labels
        self.refresh_gauges()
        for (model, _), calibrator in self.state.calibrators.items():
            m.closed_share_target.labels(model).set(calibrator.target_share)

    def reload(self, path: Path | None = None) -> None:
        """Load the policy again; a bad file keeps the old policy serving."""
        path = path or self.settings.policy
        try:
            loaded = load_policy(path)
        except PolicyError as exc:
            self.metrics.policy_reloads.labels("error").inc()
            log.error("policy reload failed; keeping the old policy", extra={"error": str(exc)})
            raise
        prior = self.classifier.artifact.score_prior.tolist()
        self.state = PolicyState.build(loaded, prior, self.state)
        self.metrics.policy_reloads.labels("ok").inc()
        self.publish_info()
        log.info("policy reloaded", extra={"policy_version": loaded.version})

    async def _watch_policy(self) -> None:
        path = self.settings.policy
        while True:
            await asyncio.sleep(self.settings.policy_reload_s)
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if mtime != self.state.loaded.mtime:
                try:
                    self.reload(path)
                except PolicyError:
                    # Remember the bad file's mtime so it is not retried until it changes.
                    self.state.loaded = LoadedPolicy(
                        self.state.loaded.policy,
                        self.state.loaded.source,
                        self.state.loaded.version,
                        mtime,
                        self.state.loaded.lines,
                    )

    def refresh_gauges(self) -> None:
        """Backend state gauges from the health board (kept off the request path)."""
        m = self.metrics
        now = time.monotonic()
        for name, backend in self.state.loaded.policy.backends.items():
            health = self.health[name]
            up = backend.enabled and health.usable(now)
            m.backend_up.labels(name, backend.tier).set(1 if up else 0)
            m.backend_enabled.labels(name, backend.tier).set(1 if backend.enabled else 0)
            m.in_flight.labels(name).set(health.in_flight)

    async def _housekeeping(self) -> None:
        """Share score histograms through Redis; refresh calibration and backend gauges."""
        m = self.metrics
        while True:
            await asyncio.sleep(self.settings.calibration_sync_s)
            self.refresh_gauges()
            for (model, rule), calibrator in list(self.state.calibrators.items()):
                if self.redis is not None:
                    try:
                        await calibrator.sync(self.redis, f"gateway:calibration:{model}:{rule}")
                    except Exception:  # Redis trouble must never stop routing
                        m.cache_errors.labels("calibration_sync").inc()
                m.closed_share.labels(model).set(calibrator.realised_share())
                m.calibrated_threshold.labels(model).set(calibrator.threshold())
