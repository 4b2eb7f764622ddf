"""The attempt step: one walk over the plan's targets, for whole answers and streams alike.

A target that fails before anything reached the client (connect error, timeout, 5xx, 429,
408, or the backend refusing our credentials) hands the request to the next one; any other
failure is the caller's and ends the walk. A stream counts as answered once its first event
has arrived: after that, nothing is retried (content would be duplicated).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from gateway.call import Call
from gateway.errors import (
    OWN_CREDENTIALS,
    GatewayError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.policy import Backend
from gateway.services import Services
from gateway.wire import Completion, EventStream, Upstream, Usage

# Worth another backend besides 5xx: our own credentials refused, timeouts, saturation.
_RETRYABLE_STATUS = OWN_CREDENTIALS | {408, 429}

T = TypeVar("T")


@dataclass(slots=True)
class OpenStream:
    """A stream whose first block has arrived; `usage` fills as the rest does."""

    backend: Backend
    first: bytes
    events: EventStream
    usage: Usage


def retryable(err: GatewayError) -> bool:
    """Whether another backend may still serve the request after this failure."""
    if isinstance(err, UpstreamStatusError):
        return err.upstream_status >= 500 or err.upstream_status in _RETRYABLE_STATUS
    return isinstance(err, UpstreamError)


def error_kind(err: GatewayError) -> str:
    """The bounded `kind` label of an upstream failure."""
    if isinstance(err, UpstreamStatusError):
        status = err.upstream_status
        return "status_5xx" if status >= 500 else "status_429" if status == 429 else "status_4xx"
    if isinstance(err, UpstreamTimeout):
        return "timeout"
    if isinstance(err, UpstreamUnavailable):
        return "connect"
    return "bad_response"


async def _walk(
    services: Services,
    call: Call,
    attempt: Callable[[Backend, Upstream, dict[str, object]], Awaitable[T]],
) -> tuple[Backend, T]:
    """Try the targets in order; the first success wins, a non-retryable failure ends it."""
    assert call.plan is not None
    targets = call.plan.targets
    m = services.metrics
    last: GatewayError | None = None
    for i, backend in enumerate(targets):
        body = {**call.body, "model": backend.model or call.asked}
        breaker = services.breakers[backend.name]
        breaker.in_flight += 1
        started = time.perf_counter()
        try:
            upstream = backend.upstream
            if call.traceparent is not None:  # tracing: the backend continues our span
                headers = {**upstream.headers, "traceparent": call.traceparent}
                upstream = replace(upstream, headers=headers)
            result = await attempt(backend, upstream, body)
        except GatewayError as err:
            kind = error_kind(err)
            m.upstream_errors.labels(backend.name, kind).inc()
            if not retryable(err):
                raise
            breaker.failure()
            if i + 1 < len(targets):
                m.fallbacks.labels(backend.name, targets[i + 1].name, kind).inc()
                call.fallbacks.append(backend.name)
            last = err
            continue
        finally:
            breaker.in_flight -= 1
            spent = time.perf_counter() - started
            call.upstream_s += spent
            m.upstream_duration.labels(backend.name).observe(spent)
        breaker.success()
        call.answered_by(backend)
        return backend, result
    raise last or UpstreamUnavailable("No backend could serve the request.")


async def complete(services: Services, call: Call) -> tuple[Backend, Completion]:
    """The first whole answer a target gives."""

    async def attempt(backend: Backend, upstream: Upstream, body: dict[str, object]) -> Completion:
        provider = services.providers[backend.provider]
        return await provider.complete(upstream, call.endpoint, body)

    return await _walk(services, call, attempt)


async def open_stream(services: Services, call: Call) -> OpenStream:
    """The first stream a target opens and sends a first event on."""

    async def attempt(backend: Backend, upstream: Upstream, body: dict[str, object]) -> OpenStream:
        usage = Usage()
        events = services.providers[backend.provider].stream(upstream, call.endpoint, body, usage)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            await events.aclose()
            raise UpstreamError(f"backend {backend.name} sent an empty stream") from None
        except BaseException:
            await events.aclose()
            raise
        return OpenStream(backend, first, events, usage)

    _, opened = await _walk(services, call, attempt)
    return opened
