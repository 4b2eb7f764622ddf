"""The long-lived objects of one worker, built by the app's lifespan.

Policy hot reload lives in `gateway.reload`, the periodic gauges and calibration sync in
`gateway.housekeeping`; this module only builds, starts and closes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gateway import __version__, housekeeping
from gateway.breakers import Breakers
from gateway.cache import ResponseCache, build_cache
from gateway.catalog import Catalog
from gateway.difficulty import DifficultyClassifier
from gateway.limits import Limiter
from gateway.log import AccessLog
from gateway.metrics import Metrics
from gateway.policy import load_policy
from gateway.providers import PROVIDERS, Provider, UpstreamClient
from gateway.reload import PolicyState, reload, watch
from gateway.response_store import ResponseStore, build_response_store
from gateway.semantic import SemanticIndex
from gateway.settings import Settings
from gateway.tasks import Background


class Services:
    """Shared HTTP client, providers, policy, classifier, cache, limits and metrics."""

    def __init__(
        self,
        settings: Settings,
        state: PolicyState,
        classifier: DifficultyClassifier,
        client: UpstreamClient,
        metrics: Metrics,
        redis: Any = None,
    ) -> None:
        self.settings = settings
        # Replaced whole on reload; a request keeps the one it started with.
        self.state = state
        self.classifier = classifier
        self.client = client
        self.providers: dict[str, Provider] = {
            name: factory(client) for name, factory in PROVIDERS.items()
        }
        self.metrics = metrics
        self.redis = redis
        # Cache writes and spend records: after the answer, never waited on by a client.
        self.background = Background()
        self.cache: ResponseCache = build_cache(settings, redis, metrics, self.background)
        self.breakers = Breakers()
        self.semantic = SemanticIndex()
        # Stored Responses (`previous_response_id`), per tenant.
        self.responses: ResponseStore = build_response_store(settings, redis, metrics)
        # What a "*" route's backends offer, for /v1/models.
        self.catalog = Catalog()
        self.limiter = Limiter(redis, settings.redis_timeout_ms / 1000, metrics, self.background)
        self._loops: list[asyncio.Task[None]] = []
        self._info_labels: tuple[str, str, str] | None = None
        # One JSON line per request unless access logging is off.
        self.access_log = AccessLog() if settings.access_log else None

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics) -> Services:
        """Load policy and classifier, open clients, start the periodic loops."""
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
        state = PolicyState.build(loaded, classifier.artifact.score_prior.tolist())
        services = cls(settings, state, classifier, client, metrics, redis)
        services.publish_info()
        if settings.policy_reload_s > 0:
            services._loops.append(asyncio.create_task(watch(services)))
        services._loops.append(asyncio.create_task(housekeeping.run(services)))
        return services

    async def close(self) -> None:
        """Stop the loops, let background writes finish, close connections."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.background.close()
        await self.client.close()
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
        housekeeping.refresh_gauges(self)
        for (model, _), calibrator in self.state.calibrators.items():
            m.closed_share_target.labels(model).set(calibrator.target_share)

    def reload(self, path: Path | None = None) -> None:
        """Load the policy file again (see `gateway.reload`)."""
        reload(self, path)
