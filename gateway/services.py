"""The long-lived objects of one worker, built by the app's lifespan.

This module only builds and closes them; `gateway.reload` (policy hot reload) and
`gateway.housekeeping` (exported state, calibration sync) work on a built `Services`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from gateway import replicas
from gateway.auth import KeyHasher, KeyRing
from gateway.breaker_board import Board
from gateway.breaker_sync import BreakerSync
from gateway.breakers import Breakers, State
from gateway.cache import ResponseCache, build_cache
from gateway.cancellation import Drain
from gateway.catalog import Catalog
from gateway.decisions import DecisionLog
from gateway.difficulty import DifficultyClassifier
from gateway.keys import VirtualKeys
from gateway.limits import Limiter
from gateway.log import AccessLog
from gateway.metrics import Metrics
from gateway.policy import load_policy
from gateway.providers import PROVIDERS, Provider, UpstreamClient
from gateway.response_store import ResponseStore, build_response_store
from gateway.retry_budget import RetryBudget
from gateway.semantic import SemanticIndex
from gateway.settings import Settings
from gateway.shadow.adapting import Adapter
from gateway.shadow.runner import Shadower
from gateway.state import PolicyState
from gateway.tasks import Background
from gateway.tracing import Tracing

log = logging.getLogger("gateway.services")

BACKGROUND_REDIS_TIMEOUT_S = 2.0


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
        self.metrics = metrics
        self.redis = redis
        # Labels, retained requests, shadow spend and the key table are read and written off
        # the request path: their Redis connections wait longer than the request path's (a busy
        # CPU must not lose labels).
        self.background_redis = _connect(settings.redis_url, BACKGROUND_REDIS_TIMEOUT_S)
        secret = settings.key_secret.get_secret_value() if settings.key_secret else ""
        hasher = KeyHasher(secret.encode())
        if not hasher.configured and state.loaded.policy.teams:
            log.warning(
                "GATEWAY_KEY_SECRET is not set: policy keys are hashed with a built-in secret "
                "and /admin/keys is disabled"
            )
        self.keys = VirtualKeys.from_settings(settings, self.background_redis, hasher, metrics)
        # Replaced whole on reload; a request keeps the one it started with.
        self.state = replace(state, keys=KeyRing(state.loaded.policy, hasher, self.keys))
        self.classifier = classifier
        self.client = client
        self.providers: dict[str, Provider] = {
            name: factory(client) for name, factory in PROVIDERS.items()
        }
        # Cache writes and spend records: after the answer, never waited on by a client.
        self.background = Background()
        self.cache: ResponseCache = build_cache(settings, redis, metrics, self.background)
        self.board = Board(settings.breaker_file) if settings.breaker_file else None
        make = self.board.breaker if self.board is not None else None
        self.breakers = Breakers(self._breaker_moved, make)
        # Circuit changes to and from the other replicas (policy `breakers: {shared: redis}`).
        self.breaker_sync = BreakerSync()
        self.retry_budget = RetryBudget()
        self.drain = Drain(settings.drain_grace_s)
        self.semantic = SemanticIndex()
        self.limiter = Limiter.from_settings(redis, settings, metrics)
        self.shadower = Shadower(
            settings,
            self.background_redis,
            metrics,
            self.background,
            self.providers,
            lambda: self.classifier.version,
        )
        # The live loop: follows the artifact replicas share, adapts when the policy says.
        self.adapter = Adapter(self, BACKGROUND_REDIS_TIMEOUT_S)
        # Periodic loops (policy watch, housekeeping), started by the app once built.
        self.loops: list[asyncio.Task[None]] = []
        self.info_labels: tuple[str, str, str] | None = None
        # Stored Responses (`previous_response_id`), per tenant.
        self.responses: ResponseStore = build_response_store(settings, redis, metrics)
        # What a "*" route's backends offer, for /v1/models.
        self.catalog = Catalog()
        # One JSON line per request unless access logging is off.
        self.access_log = AccessLog() if settings.access_log else None
        self.decisions = _decision_log(settings)
        self.tracing = Tracing.from_settings(settings)
        # Hot reload: the state before the last reload (for rollback), the last failure.
        self.previous_state: PolicyState | None = None
        self.reload_error: str | None = None

    def _breaker_moved(self, backend: str, state: State) -> None:
        self.breaker_sync.note(backend, state, self.breakers[backend].open_until)
        name, _, index = backend.rpartition("#")
        replicated = self.state.loaded.policy.backends.get(name) if index.isdigit() else None
        if replicated is not None and replicated.replicas is not None:
            now = time.monotonic()
            # Not the moving breaker's own `current`: that would reload it mid-change.
            others = [
                self.breakers[r.key].current(now) for r in replicated.replicas if r.key != backend
            ]
            replicas.moved(self.metrics, replicated, int(index), state, replicas.best(others))
            log.warning("replica circuit %s", state.name.lower(), extra={"backend": backend})
            return
        self.metrics.breaker_state.labels(backend).set(state.value)
        self.metrics.breaker_transitions.labels(backend, state.name.lower()).inc()
        log.warning("circuit %s", state.name.lower(), extra={"backend": backend})

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics) -> Services:
        """Load policy and classifier, open clients (the app starts the loops)."""
        loaded = load_policy(settings.policy)
        classifier = await asyncio.to_thread(
            DifficultyClassifier.load, settings.classifier_artifact
        )
        client = UpstreamClient(settings.upstream_max_connections)
        redis = _connect(settings.redis_url, settings.redis_timeout_ms / 1000)
        state = PolicyState.build(loaded, classifier.artifact.score_prior.tolist())
        services = cls(settings, state, classifier, client, metrics, redis)
        try:
            await services.keys.refresh()
        except Exception:  # Redis away at startup: the key loop reads the table once it is back
            log.warning("could not read the key table at startup; retrying in the background")
        return services

    async def close(self) -> None:
        """Stop the loops, let background writes finish, close connections."""
        for task in self.loops:
            task.cancel()
        await asyncio.gather(*self.loops, return_exceptions=True)
        await self.background.close()
        await self.client.close()
        await self.limiter.close()
        if self.access_log is not None:
            self.access_log.close()
        if self.decisions is not None:
            await asyncio.to_thread(self.decisions.close)
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.close)
        for redis in (self.redis, self.background_redis):
            if redis is not None:
                await redis.aclose()
        if self.board is not None:
            self.board.close()


def _connect(url: str, timeout_s: float) -> Any:
    """An asyncio Redis client (no I/O yet), or None without a URL."""
    if not url:
        return None
    import redis.asyncio as aioredis

    return aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def _decision_log(settings: Settings) -> DecisionLog | None:
    """Decision records to files and/or Redis, as configured; None when neither is."""
    redis_url = settings.redis_url if settings.decision_log_redis else ""
    if settings.decision_log_dir is None and not redis_url:
        return None
    return DecisionLog(settings.decision_log_dir, redis_url=redis_url or None)
