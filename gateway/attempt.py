"""The I/O half of the pipeline: cache lookup, backend attempts with fallback, the answer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import orjson

from gateway.accounting import account
from gateway.asgi import Reply, RequestHead
from gateway.cache import CachedAnswer, cache_key
from gateway.call import Call, classify, finish
from gateway.errors import (
    GatewayError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.limits import filled
from gateway.policy import Backend
from gateway.providers import Completion, EventStream, Usage
from gateway.semantic import context_id, embed, split_last_turn
from gateway.services import Services
from gateway.streaming import Assembler, error_event, replay

EVENT_STREAM = b"text/event-stream; charset=utf-8"
# Worth another backend: timeouts, saturation, and a backend refusing our credentials.
_RETRYABLE_STATUS = frozenset({401, 403, 408, 429})


@dataclass(frozen=True, slots=True)
class Semantic:
    """A semantic lookup: the exact context, the last turn's vector, the similarity bar."""

    context: str
    vector: np.ndarray
    threshold: float


@dataclass(frozen=True, slots=True)
class CachePlan:
    """Whether and how this request uses the cache."""

    key: str | None
    ttl_s: int
    lookup: bool
    store: bool
    semantic: Semantic | None = None


def cache_plan(call: Call, head: RequestHead) -> CachePlan:
    """Decide cache use from the policy, the request's determinism and its headers."""
    settings = call.state.cache[call.model]
    body = call.body
    control = head.cache_control
    opt_out = head.cache_opt_out
    sampled = (body.get("temperature") or 0) > 0 and not settings.cache_sampled
    multi = (body.get("n") or 1) > 1 or bool(body.get("logprobs"))
    tools = bool(body.get("tools")) and settings.cache_tools is False
    if not settings.enabled or opt_out or sampled or multi or tools or "no-store" in control:
        return CachePlan(None, 0, False, False)
    assert call.tenant is not None
    partition = "shared" if settings.shared_across_tenants else call.tenant.partition
    version = call.state.loaded.version
    key = cache_key(partition, call.model, version, call.endpoint, body)
    semantic = None
    split = split_last_turn(body) if settings.semantic and call.endpoint == "chat" else None
    if split is not None:
        context, text = split
        semantic = Semantic(
            context_id(partition, call.model, version, context),
            embed(text),
            settings.semantic_threshold or 0.95,
        )
    return CachePlan(key, settings.ttl_s or 3600, "no-cache" not in control, True, semantic)


async def _lookup(services: Services, call: Call, cache: CachePlan) -> CachedAnswer | None:
    """Exact lookup, then a semantic one; counts the result of each kind asked."""
    assert cache.key is not None
    m = services.metrics
    raw = await services.cache.get(cache.key)
    hit = CachedAnswer.loads(raw) if raw is not None else None
    m.cache.labels(call.model, "hit" if hit else "miss", "exact").inc()
    if hit is not None or cache.semantic is None:
        return hit
    s = cache.semantic
    found = services.semantic.search(s.context, s.vector, s.threshold)
    if found is not None:
        raw = await services.cache.get(found[0])
        hit = CachedAnswer.loads(raw) if raw is not None else None
    m.cache.labels(call.model, "hit" if hit else "miss", "semantic").inc()
    return hit


async def _store(services: Services, cache: CachePlan, entry: CachedAnswer) -> None:
    assert cache.key is not None
    await services.cache.set(cache.key, entry.dumps(), cache.ttl_s)
    if cache.semantic is not None:
        services.semantic.add(cache.semantic.context, cache.semantic.vector, cache.key)


async def from_cache(services: Services, call: Call, cache: CachePlan) -> Reply | None:
    """The cached answer, if this request may use the cache and one is stored."""
    if cache.key is None:
        services.metrics.cache.labels(call.model, "bypass", "exact").inc()
        return None
    call.cache_result = "miss"
    if not cache.lookup:
        return None
    hit = await _lookup(services, call, cache)
    if hit is None:
        return None
    call.cache_result = "hit"
    return _from_cache(services, call, hit)


async def answer(services: Services, call: Call, cache: CachePlan) -> Reply:
    """The first backend's answer that arrives, stored in the cache when allowed."""
    if call.stream:
        return await _stream(services, call, cache)
    backend, completion = await _complete(services, call)
    _account(services, call, backend, completion.usage, len(completion.body))
    if cache.store and cache.key is not None:
        usage = completion.usage
        entry = _entry(services, call, completion.body, backend, usage)
        await _store(services, cache, entry)
    finish(services, call, 200, backend.name, backend.tier)
    return Reply(200, call.headers(backend.name, backend.tier), completion.body)


def _entry(
    services: Services, call: Call, body: bytes, backend: Backend, usage: Usage
) -> CachedAnswer:
    """A cache entry for an answer; it keeps the score so a hit need not classify again."""
    tokens = usage.prompt_tokens, usage.completion_tokens
    version = services.classifier.version
    return CachedAnswer(body, backend.name, backend.tier, *tokens, call.score, version)


def _from_cache(services: Services, call: Call, hit: CachedAnswer) -> Reply:
    # an entry from before the score was stored, or from another classifier, is re-scored
    same_scorer = hit.scorer == services.classifier.version
    classify(services, call, hit.score if same_scorer else None)
    policy = call.state.loaded.policy
    backend = policy.backends.get(hit.backend)
    usage = Usage(hit.prompt_tokens, hit.completion_tokens)
    services.metrics.decisions.labels(call.model, hit.tier, "cache").inc()
    if backend is not None:
        account(services.metrics, policy, backend, usage, call.team, cache_hit=True)
    services.limiter.settle(call.admission, 0, 0, 0.0)  # no upstream tokens, no cost
    headers = call.headers(hit.backend, hit.tier)
    finish(services, call, 200, hit.backend, hit.tier)
    if not call.stream:
        return Reply(200, headers, hit.body)
    options = call.body.get("stream_options") or {}
    events = replay(orjson.loads(hit.body), options.get("include_usage") is True)

    async def body() -> AsyncIterator[bytes]:
        yield b"".join(events)  # a replay is whole: one block

    return Reply(200, headers, media_type=EVENT_STREAM, stream=body())


def _account(
    services: Services, call: Call, backend: Backend, usage: Usage, answer_bytes: int
) -> None:
    assert call.plan is not None
    reason = "fallback" if backend is not call.plan.targets[0] else call.plan.reason
    services.metrics.decisions.labels(call.model, backend.tier, reason).inc()
    if call.admission is not None:  # an answer without usage is charged an estimate
        sent = answer_bytes if call.endpoint != "embeddings" else 0
        usage = filled(usage, call.admission.prompt_tokens, sent)
    cost, _ = account(services.metrics, call.state.loaded.policy, backend, usage, call.team)
    services.limiter.settle(call.admission, usage.prompt_tokens, usage.completion_tokens, cost)


def _retryable(err: GatewayError) -> bool:
    if isinstance(err, UpstreamStatusError):
        return err.upstream_status >= 500 or err.upstream_status in _RETRYABLE_STATUS
    return isinstance(err, UpstreamError)


def _error_kind(err: GatewayError) -> str:
    if isinstance(err, UpstreamStatusError):
        status = err.upstream_status
        return (
            "status_5xx" if status >= 500 else f"status_{status}" if status == 429 else "status_4xx"
        )
    if isinstance(err, UpstreamTimeout):
        return "timeout"
    if isinstance(err, UpstreamUnavailable):
        return "connect"
    return "bad_response"


def _failed(services: Services, call: Call, backend: Backend, err: GatewayError, i: int) -> None:
    """Count a failed attempt and, if it may move on, the fallback it causes."""
    services.metrics.upstream_errors.labels(backend.name, _error_kind(err)).inc()
    if not _retryable(err):
        return
    services.health[backend.name].failure()
    assert call.plan is not None
    targets = call.plan.targets
    if i + 1 < len(targets):
        services.metrics.fallbacks.labels(backend.name, targets[i + 1].name, _error_kind(err)).inc()


async def _complete(services: Services, call: Call) -> tuple[Backend, Completion]:
    assert call.plan is not None
    last: GatewayError | None = None
    for i, backend in enumerate(call.plan.targets):
        provider = services.providers[backend.provider]
        body = {**call.body, "model": backend.model or call.asked}
        health = services.health[backend.name]
        health.in_flight += 1
        started = time.perf_counter()
        try:
            completion = await provider.complete(backend, call.endpoint, body)
        except GatewayError as err:
            _failed(services, call, backend, err, i)
            if not _retryable(err):
                raise
            last = err
            continue
        finally:
            health.in_flight -= 1
            spent = time.perf_counter() - started
            call.upstream_s += spent
            services.metrics.upstream_duration.labels(backend.name).observe(spent)
        health.success()
        return backend, completion
    raise last or UpstreamUnavailable("No backend could serve the request.")


async def _open_stream(services: Services, call: Call) -> tuple[Backend, EventStream, bytes, Usage]:
    """Open streams in target order until one yields its first event."""
    assert call.plan is not None
    last: GatewayError | None = None
    for i, backend in enumerate(call.plan.targets):
        provider = services.providers[backend.provider]
        body = {**call.body, "model": backend.model or call.asked}
        usage = Usage()
        events = provider.stream(backend, call.endpoint, body, usage)
        started = time.perf_counter()
        try:
            first = await anext(events)
        except StopAsyncIteration:
            err: GatewayError = UpstreamError(f"backend {backend.name} sent an empty stream")
        except GatewayError as exc:
            err = exc
        else:
            call.upstream_s += time.perf_counter() - started
            services.health[backend.name].success()
            return backend, events, first, usage
        finally:
            services.metrics.upstream_duration.labels(backend.name).observe(
                time.perf_counter() - started
            )
        await events.aclose()
        _failed(services, call, backend, err, i)
        if not _retryable(err):
            raise err
        last = err
    raise last or UpstreamUnavailable("No backend could serve the request.")


async def _stream(services: Services, call: Call, cache: CachePlan) -> Reply:
    backend, events, first, usage = await _open_stream(services, call)
    m = services.metrics
    to_first = time.perf_counter() - call.started
    m.ttft.labels(call.model, backend.tier).observe(to_first)
    # What a stream's client feels the gateway add is its delay to the first event.
    call.overhead_s = max(to_first - call.upstream_s, 0.0)
    health = services.health[backend.name]
    assembler = Assembler() if cache.store and cache.key is not None else None

    async def body() -> AsyncIterator[bytes]:
        status = 200
        sent = len(first)
        health.in_flight += 1
        try:
            # Each block goes to the client before it is parsed for the cache.
            yield first
            if assembler is not None:
                assembler.feed(first)
            async for event in events:
                sent += len(event)
                yield event
                if assembler is not None:
                    assembler.feed(event)
        except GatewayError as err:
            status = err.http_status
            m.upstream_errors.labels(backend.name, _error_kind(err)).inc()
            yield error_event(err)
        finally:
            health.in_flight -= 1
            await events.aclose()
            _account(services, call, backend, usage, sent)
            finish(services, call, status, backend.name, backend.tier)
        whole = assembler.result() if assembler is not None else None
        if whole is not None and cache.key is not None:
            # The client may not have asked for usage; the stored answer always has it.
            whole["usage"] = usage.as_json()
            entry = _entry(services, call, orjson.dumps(whole), backend, usage)
            await _store(services, cache, entry)

    headers = call.headers(backend.name, backend.tier)
    return Reply(200, headers, media_type=EVENT_STREAM, stream=body())
