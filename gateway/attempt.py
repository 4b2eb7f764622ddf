"""The attempt step: one walk over the plan's targets, for whole answers and streams alike.

A target that fails before anything reached the client (connect error, timeout, 5xx, 429,
408, or the backend refusing our credentials) hands the request to the next one; any other
failure is the caller's and ends the walk. A stream counts as answered once its first event
has arrived: after that, nothing is retried (content would be duplicated).

Each attempt has a deadline: the backend's `timeout_s` for a whole answer, its
`first_token_timeout_s` for a stream's first event, and never more than is left of the
request's own deadline (which, once passed, ends the walk). A target whose circuit is open,
or half-open with its probe slots taken, or that asked for time with `Retry-After` (a 429 or
503), is skipped (`gateway.breakers`).

Retries are bounded twice (policy `retries`): a request makes at most `max_attempts`
attempts, and a worker's retries stay within its `RetryBudget` (a share of recent first
attempts). Past either, the request fails at once with its last error.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from gateway.breakers import Admit, Breaker
from gateway.call import Call
from gateway.errors import (
    OWN_CREDENTIALS,
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.policy import Backend
from gateway.policy.resilience import Retries
from gateway.services import Services
from gateway.wire import Completion, EventStream, Native, Upstream, Usage

# Worth another backend besides 5xx: our own credentials refused, timeouts, saturation.
_RETRYABLE_STATUS = OWN_CREDENTIALS | {408, 429}
# Answers whose `Retry-After` keeps the backend aside until then.
_PAUSING_STATUS = frozenset({429, 503})

T = TypeVar("T")
# What one target is sent: the chat body, or the door's own body for a backend that speaks it.
Sent = dict[str, object] | Native


@dataclass(slots=True)
class OpenStream:
    """A stream whose first block has arrived; `usage` fills as the rest does."""

    backend: Backend
    first: bytes
    events: EventStream
    usage: Usage
    dialect: str = "chat"


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


def _refused(targets: list[Backend], services: Services) -> UpstreamUnavailable:
    """Every target's circuit is open: fail fast, saying when to come back."""
    now = time.monotonic()
    wait = min(services.breakers[b.key].retry_after(now) for b in targets)
    names = ", ".join(b.name for b in targets)
    return UpstreamUnavailable(
        f"No backend is available right now (circuit open: {names}).",
        headers={"retry-after": str(max(math.ceil(wait), 1))},
    )


def _pause_if_asked(breaker: Breaker, err: GatewayError, retries: Retries) -> None:
    """A 429 or 503 with `Retry-After`: skip the backend until then (capped)."""
    if isinstance(err, UpstreamStatusError) and err.upstream_status in _PAUSING_STATUS:
        wait = err.retry_after_s
        if wait is not None and wait > 0:
            breaker.pause(time.monotonic(), min(wait, retries.max_retry_after_s))


async def _within(seconds: float, name: str, work: Awaitable[T]) -> T:
    """``work``, or UpstreamTimeout once ``seconds`` have passed."""
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError as exc:
        raise UpstreamTimeout(f"backend {name} did not answer within {seconds:g} s") from exc


def _request(services: Services, call: Call, backend: Backend) -> Sent | None:
    """What ``backend`` is sent: the door's own body when its provider speaks the door's
    dialect, else the chat body; None when the request can only be served natively."""
    model = backend.model or call.asked
    native = call.native
    if native is not None:
        if services.providers[backend.provider].speaks(backend.upstream, native.dialect):
            return native.to(model)
        if native.unknown is not None:
            return None
    return {**call.body, "model": model}


async def _walk(
    services: Services,
    call: Call,
    attempt: Callable[[Backend, Upstream, Sent], Awaitable[T]],
    limit: Callable[[Upstream], float],
) -> tuple[Backend, T]:
    """Try the targets in order; the first success wins, a non-retryable failure ends it.

    A target whose circuit refuses the request (or that is paused) is skipped; each attempt
    is bounded by the backend's own ``limit`` and by what is left of the request's deadline;
    a retry needs room in the request's `max_attempts` and in the worker's retry budget.
    """
    assert call.plan is not None
    targets = call.plan.targets
    m = services.metrics
    retries = call.state.loaded.policy.retries
    budget = services.retry_budget
    last: tuple[Backend, GatewayError, str] | None = None  # the failure before this attempt
    attempts = 0
    refused: list[Backend] = []
    for i, backend in enumerate(targets):
        body = _request(services, call, backend)
        if body is None:
            continue
        breaker = services.breakers[backend.key]
        now = time.monotonic()
        admitted = Admit.REFUSED if breaker.paused(now) else breaker.admit(now, backend.breaker)
        if not admitted:
            refused.append(backend)
            continue
        if last is None:
            budget.first(now, retries)
        else:
            failed, err, kind = last
            at_most = attempts >= retries.max_attempts
            if at_most or not budget.try_retry(now, retries):
                breaker.release(admitted)
                scope = "request" if at_most else "worker"
                m.retry_budget_exhausted.labels(failed.name, scope).inc()
                raise err
            m.fallbacks.labels(failed.name, backend.name, kind).inc()
        attempts += 1
        upstream = backend.upstream
        own = limit(upstream)
        left = call.deadline - time.perf_counter()
        if left <= 0:
            breaker.release(admitted)
            raise UpstreamTimeout("The request's deadline passed before a backend answered.")
        breaker.in_flight += 1
        started = time.perf_counter()
        try:
            if call.traceparent is not None:  # tracing: the backend continues our span
                headers = {**upstream.headers, "traceparent": call.traceparent}
                upstream = replace(upstream, headers=headers)
            work = attempt(backend, upstream, body)
            result = await _within(min(own, left), backend.name, work)
        except GatewayError as err:
            kind = error_kind(err)
            m.upstream_errors.labels(backend.name, kind).inc()
            if not retryable(err) or (isinstance(err, UpstreamTimeout) and own > left):
                # The caller's error (the backend did answer), or the caller's deadline.
                if isinstance(err, UpstreamStatusError):
                    breaker.success(admitted)
                else:
                    breaker.release(admitted)
                raise
            breaker.failure(time.monotonic(), backend.breaker, admitted)
            _pause_if_asked(breaker, err, retries)
            if admitted is Admit.PROBE:
                m.breaker_probes.labels(backend.name, "failure").inc()
            if i + 1 < len(targets):
                call.fallbacks.append(backend.name)
            last = (backend, err, kind)
            continue
        except BaseException:  # cancelled: the client left, or the drain ran out
            breaker.release(admitted)
            raise
        finally:
            breaker.in_flight -= 1
            spent = time.perf_counter() - started
            call.upstream_s += spent
            m.upstream_duration.labels(backend.name).observe(spent)
        breaker.success(admitted)
        if admitted is Admit.PROBE:
            m.breaker_probes.labels(backend.name, "success").inc()
        spilled = call.plan.spilled_from
        if spilled is not None and spilled != backend.name:
            m.spillovers.labels(spilled, backend.name, call.plan.spill_reason).inc()
        call.answered_by(backend)
        return backend, result
    if last is None and refused:
        raise _refused(refused, services)
    if last is not None:
        raise last[1]
    unknown = call.native.unknown if call.native is not None else None
    if unknown is not None:
        message = f"Unknown parameter: '{unknown}' (no backend for this model takes it)."
        raise InvalidRequest(message, param=unknown, code="unknown_parameter")
    raise UpstreamUnavailable("No backend could serve the request.")


def _whole_answer(upstream: Upstream) -> float:
    return upstream.timeout_s


def _first_token(upstream: Upstream) -> float:
    return upstream.first_token_timeout_s


async def complete(services: Services, call: Call) -> tuple[Backend, Completion]:
    """The first whole answer a target gives."""

    async def attempt(backend: Backend, upstream: Upstream, body: Sent) -> Completion:
        provider = services.providers[backend.provider]
        if isinstance(body, Native):
            return await provider.complete_native(upstream, body)
        return await provider.complete(upstream, call.endpoint, body)

    return await _walk(services, call, attempt, _whole_answer)


async def open_stream(services: Services, call: Call) -> OpenStream:
    """The first stream a target opens and sends a first event on."""

    async def attempt(backend: Backend, upstream: Upstream, body: Sent) -> OpenStream:
        usage = Usage()
        provider = services.providers[backend.provider]
        if isinstance(body, Native):
            events = provider.stream_native(upstream, body, usage)
        else:
            events = provider.stream(upstream, call.endpoint, body, usage)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            await events.aclose()
            raise UpstreamError(f"backend {backend.name} sent an empty stream") from None
        except BaseException:
            await events.aclose()
            raise
        dialect = body.dialect if isinstance(body, Native) else "chat"
        return OpenStream(backend, first, events, usage, dialect)

    _, opened = await _walk(services, call, attempt, _first_token)
    return opened


def broke(services: Services, call: Call, backend: Backend, err: GatewayError) -> None:
    """A stream broke after its first event: counted, and against the backend's circuit."""
    call.status = err.http_status
    services.metrics.upstream_errors.labels(backend.name, error_kind(err)).inc()
    if retryable(err):
        services.breakers[backend.key].failure(time.monotonic(), backend.breaker)
