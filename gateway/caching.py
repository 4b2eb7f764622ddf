"""The cache step: whether a request may use the cache, the lookup, and the store after."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.cache import CachedAnswer, cache_key
from gateway.call import Call
from gateway.semantic import context_id, embed, split_last_turn
from gateway.services import Services
from gateway.wire import Usage


@dataclass(frozen=True, slots=True)
class Semantic:
    """A semantic lookup: the exact context, the last turn's vector, the similarity bar."""

    context: str
    vector: np.ndarray
    threshold: float


@dataclass(frozen=True, slots=True)
class CachePlan:
    """Whether and how this request uses the cache (`key` None: it does not)."""

    key: str | None
    ttl_s: int = 0
    lookup: bool = False
    semantic: Semantic | None = None


NO_CACHE = CachePlan(None)


def plan_cache(call: Call, cache_control: str, opt_out: bool, scorer: str) -> CachePlan:
    """Decide cache use from the policy, the request's determinism and its headers.

    The key holds the policy and classifier versions (``scorer``): either may route the same
    request elsewhere, so an answer cached under one is not served under the other.
    """
    settings = call.state.cache[call.model]
    body = call.body
    sampled = (body.get("temperature") or 0) > 0 and not settings.cache_sampled
    multi = (body.get("n") or 1) > 1 or bool(body.get("logprobs"))
    tools = bool(body.get("tools")) and settings.cache_tools is False
    if not settings.enabled or opt_out or sampled or multi or tools or "no-store" in cache_control:
        return NO_CACHE
    assert call.tenant is not None
    partition = "shared" if settings.shared_across_tenants else call.tenant.partition
    version = f"{call.state.loaded.version}+{scorer}"
    native = call.native
    if native is None:
        key = cache_key(partition, call.model, version, call.endpoint, body)
    else:
        # Keyed by the door's own body: a backend that speaks it reads fields the chat view
        # drops (thinking, cache_control, ...); its answers are kept whole or as streamed,
        # so a semantic match must be of the same form too.
        form = f"{native.dialect}:{'stream' if call.stream else 'whole'}"
        key = cache_key(partition, call.model, version, form, native.body)
        version = f"{version}:{form}"
    semantic = None
    split = split_last_turn(body) if settings.semantic and call.endpoint == "chat" else None
    if split is not None:
        context, text = split
        semantic = Semantic(
            context_id(partition, call.model, version, context),
            embed(text),
            settings.semantic_threshold or 0.95,
        )
    return CachePlan(key, settings.ttl_s or 3600, "no-cache" not in cache_control, semantic)


async def lookup(services: Services, call: Call, cache: CachePlan) -> CachedAnswer | None:
    """The stored answer, if this request may use one; exact first, then semantic."""
    m = services.metrics
    if cache.key is None:
        m.cache.labels(call.model, "bypass", "exact").inc()
        return None
    call.cache_result = "miss"
    if not cache.lookup:
        return None
    raw = await services.cache.get(cache.key)
    hit = CachedAnswer.loads(raw) if raw is not None else None
    m.cache.labels(call.model, "hit" if hit else "miss", "exact").inc()
    if hit is None and cache.semantic is not None:
        s = cache.semantic
        found = services.semantic.search(s.context, s.vector, s.threshold)
        if found is not None:
            raw = await services.cache.get(found[0])
            hit = CachedAnswer.loads(raw) if raw is not None else None
        m.cache.labels(call.model, "hit" if hit else "miss", "semantic").inc()
    if hit is not None:
        call.cache_result = "hit"
    return hit


async def store(
    services: Services,
    call: Call,
    cache: CachePlan,
    body: bytes,
    usage: Usage,
    dialect: str = "chat",
) -> None:
    """Keep an answer (in ``dialect``); it keeps the score so a hit need not classify again."""
    if cache.key is None:
        return
    entry = CachedAnswer(
        body,
        call.backend,
        call.tier,
        usage.prompt_tokens,
        usage.completion_tokens,
        call.score,
        services.classifier.version,
        dialect,
    )
    await services.cache.set(cache.key, entry.dumps(), cache.ttl_s)
    if cache.semantic is not None:
        services.semantic.add(cache.semantic.context, cache.semantic.vector, cache.key)
