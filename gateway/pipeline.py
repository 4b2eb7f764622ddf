"""One request, top to bottom: auth → parse → limits → cache → classify → plan → attempt → account.

`handle` is the only place that sequences a request. Each step is a function that returns
data (a tenant, a cache plan, a score, a plan, a completion, an open stream); none of them
renders HTTP or calls back up. The door that received the request enters `handle`, sends
the `Answer` it yields (a stream is consumed inside), and on the way out the one
`try/finally` here finishes the request exactly once: metrics and the access log line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import attempt, caching, telemetry
from gateway.accounting import charge, charge_hit, charge_unread
from gateway.auth import Tenant
from gateway.cache import CachedAnswer
from gateway.call import Call
from gateway.cancellation import Reason, Watch, cut_short, time_limit
from gateway.errors import ClientGone, GatewayError
from gateway.limits import estimate, tokens_in
from gateway.planning import make_plan, resolve_model, sticky_draw
from gateway.policy import Shadow
from gateway.protocol import parse_body, validate
from gateway.services import Services
from gateway.streaming import Assembler, Recorder, error_event, replay
from gateway.wire import Endpoint, Native, Usage, wants_usage

# nginx's "client closed request": the client left before it could be answered.
CLIENT_GONE = 499
# What a request cut short is logged as (a server-side cancellation of unknown cause: 503).
_CUT_STATUS: dict[Reason | None, int] = {"client_gone": CLIENT_GONE, "idle": 504, "deadline": 504}

# A door's own dialect → the checked chat body (with its "model"), the view every step reads,
# and the door's own body for backends that speak its dialect; for the caller's tenant.
BodyParser = Callable[[bytes, Tenant], Awaitable[tuple[dict[str, Any], Native | None]]]


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a front door hands the pipeline: the request, without its transport.

    A door that speaks another dialect (Messages, Responses) gives ``parse``, which checks
    its body and translates it into the chat body the pipeline reads (plus its own body, sent
    as is to a backend whose provider speaks the dialect), and ``door``, the endpoint label
    of its metrics; OpenAI's doors give neither.
    """

    endpoint: Endpoint
    request_id: str
    authorization: str | None
    read_body: Callable[[], Awaitable[bytes]]
    cache_control: str = ""
    cache_opt_out: bool = False
    traceparent: str | None = None
    door: str | None = None
    parse: BodyParser | None = None
    # The client's own deadline (`x-gateway-timeout-ms`), capped by the server's.
    timeout_s: float | None = None
    # Set by the door: notices the client leaving and the drain's end.
    watch: Watch | None = None


@dataclass(slots=True)
class Answer:
    """A whole JSON body or a stream of SSE blocks; ``dialect``: "chat" (OpenAI's), or the
    door's own when a backend answered it natively."""

    headers: dict[str, str]
    body: bytes = b""
    events: AsyncGenerator[bytes, None] | None = None
    dialect: str = "chat"


@asynccontextmanager
async def handle(services: Services, request: Incoming) -> AsyncIterator[Answer]:
    """Serve one request; raise GatewayError (with the headers known so far) on failure."""
    call = Call(request.endpoint, request.request_id, time.perf_counter(), services.state)
    limit = time_limit(services.settings.request_timeout_s, request.timeout_s)
    call.deadline = call.started + limit
    watch = request.watch or Watch()
    if services.tracing is not None:
        services.tracing.start(call, request.traceparent)
    call.door = request.door
    try:
        yield await _answer(services, call, request, watch)
    except GatewayError as err:
        call.status = err.http_status
        err.headers = {**call.headers(), **err.headers}
        raise
    except ClientGone:
        call.status = CLIENT_GONE
        raise
    except asyncio.CancelledError:
        call.status = _CUT_STATUS.get(watch.reason, 503)
        services.metrics.cancellations.labels(watch.reason or "server").inc()
        raise
    finally:
        watch.close()
        if call.unread is not None:  # the client left before the stream was read
            await charge_unread(services, call)
        services.limiter.release(call.admission)  # a no-op once settled
        telemetry.finish(services, call)


async def _answer(services: Services, call: Call, request: Incoming, watch: Watch) -> Answer:
    call.tenant = call.state.keys.authenticate(request.authorization)
    raw = await request.read_body()
    if request.parse is None:
        call.body = parse_body(raw)
        call.asked = validate(call.endpoint, call.body)
    else:
        call.body, call.native = await request.parse(raw, call.tenant)
        call.asked = call.body["model"]
    call.stream = call.endpoint != "embeddings" and call.body.get("stream") is True
    policy = call.state.loaded.policy
    call.model, _ = resolve_model(policy, call.asked, call.tenant.allowed_models)
    # One Redis round trip: windows, tokens, the budget hold (priced only if a budget applies)
    reserve = 0.0
    if services.limiter.rules(call.tenant).budgets:
        prices = call.state.prices.get(call.model, ())
        reserve = estimate(prices, call.endpoint, call.body, len(raw)).reserve_usd
    call.admission = await services.limiter.admit(call.tenant, tokens_in(len(raw)), reserve)
    scorer = services.classifier.version
    cache = caching.plan_cache(call, request.cache_control, request.cache_opt_out, scorer)
    hit = await caching.lookup(services, call, cache)
    if hit is not None:  # no routing to do; the entry keeps its score
        return _from_cache(services, call, hit)
    _classify(services, call)
    _plan(services, call)
    opted_out = request.cache_opt_out or "no-store" in request.cache_control
    shadow = services.shadower.wants(call, opted_out)
    if call.stream:
        call.unread = opened = await attempt.open_stream(services, call)
        events = _relay(services, call, opened, cache, shadow, watch)
        return Answer(call.headers(), events=events, dialect=opened.dialect)
    backend, completion = await attempt.complete(services, call)
    body, dialect = completion.body, completion.dialect
    charge(services, call, backend, completion.usage, len(body))
    await caching.store(services, call, cache, body, completion.usage, dialect)
    _after(services, call, shadow if dialect == "chat" else None, body)
    call.status = 200
    return Answer(call.headers(), body, dialect=dialect)


def _after(services: Services, call: Call, shadow: Shadow | None, answer: bytes) -> None:
    """Off the critical path: a sampled shadow evaluation, the request kept for feedback."""
    if shadow is not None:
        services.shadower.consider(call, shadow, answer)
    if call.tenant is not None and call.state.retains(call.team):
        record = {"messages": call.body.get("messages"), "model": call.model, "score": call.score}
        services.shadower.retained.offer(call.tenant.partition, call.request_id, record)


def _classify(services: Services, call: Call, known: float | None = None) -> None:
    """Score difficulty for chat and completions; embeddings are not classified.

    ``known``: a score computed earlier by the same classifier (a cache entry keeps one),
    taken as is instead of scoring again; it is observed all the same.
    """
    if call.endpoint == "embeddings":
        return
    classifier = services.classifier
    call.score = classifier.score(call.body) if known is None else known
    call.scorer = classifier.version
    services.metrics.difficulty.labels(call.model).observe(call.score)


def _plan(services: Services, call: Call) -> None:
    """Choose targets by policy, score and backend health; feed the share calibrators."""
    state = call.state
    policy = state.loaded.policy
    calibrators = state.calibrators

    def threshold(rule: int) -> float:
        calibrator = calibrators.get((call.model, rule))
        return calibrator.threshold() if calibrator is not None else 1.0

    def decide(rule: int, score: float) -> bool:
        calibrator = calibrators.get((call.model, rule))
        return calibrator.decide(score) if calibrator is not None else score >= 1.0

    route = policy.models[call.model]
    call.plan = make_plan(
        policy,
        call.model,
        route,
        call.endpoint,
        call.score,
        threshold,
        services.breakers,
        closed_allowed=call.team not in state.self_hosted,
        # Past the team's soft budget share: the open tier while it has a target.
        open_first=call.admission is not None and call.admission.soft_exceeded,
        decide=decide,
        sticky=sticky_draw(call.body) if route.splits else 0.0,
        needs_tools=bool(call.body.get("tools")) and call.body.get("tool_choice") != "none",
    )
    if call.score is not None and calibrators:
        closed = call.plan.targets[0].tier == "closed"
        for (model, _), calibrator in calibrators.items():
            if model == call.model:
                calibrator.observe(call.score)
                calibrator.record(closed)


def _from_cache(services: Services, call: Call, hit: CachedAnswer) -> Answer:
    # an entry from before the score was stored, or from another classifier, is re-scored
    same_scorer = hit.scorer == services.classifier.version
    _classify(services, call, hit.score if same_scorer else None)
    call.backend, call.tier = hit.backend, hit.tier
    charge_hit(services, call, Usage(hit.prompt_tokens, hit.completion_tokens))
    call.status = 200
    if not call.stream:
        return Answer(call.headers(), hit.body, dialect=hit.dialect)
    if hit.dialect != "chat":  # a native stream, kept as it came
        return Answer(call.headers(), events=_whole(hit.body), dialect=hit.dialect)
    events = replay(orjson.loads(hit.body), wants_usage(call.body))
    return Answer(call.headers(), events=_whole(b"".join(events)))


async def _whole(block: bytes) -> AsyncGenerator[bytes, None]:
    yield block  # a replay is whole: one block


async def _relay(
    services: Services,
    call: Call,
    opened: attempt.OpenStream,
    cache: caching.CachePlan,
    shadow: Shadow | None,
    watch: Watch,
) -> AsyncGenerator[bytes, None]:
    """Forward a stream's blocks; a failure after the first ends it with an error event.

    So does a backend quiet for its `idle_timeout_s`, the request's deadline, or the end of
    the drain (the watch cancels the wait); a client that leaves stops it where it waits.
    """
    call.unread = None  # read from here on: charged below however it ends
    backend, events, usage = opened.backend, opened.events, opened.usage
    m = services.metrics
    to_first = time.perf_counter() - call.started
    m.ttft.labels(call.model, backend.tier).observe(to_first)
    # What a stream's client feels the gateway add is its delay to the first event.
    call.overhead_s = max(to_first - call.upstream_s, 0.0)
    breaker = services.breakers[backend.key]
    native = opened.dialect != "chat"  # kept as it came, and not shadowed
    shadow = None if native else shadow
    keep = cache.key is not None or shadow is not None
    assembler: Assembler | Recorder | None = None
    if keep:
        assembler = Recorder() if native else Assembler()
    call.status = 200
    sent = len(opened.first)
    breaker.in_flight += 1
    watch.watch_stream(backend.upstream.idle_timeout_s, call.deadline - time.perf_counter())
    try:
        # Each block goes to the client before it is parsed for the cache.
        watch.sending()
        yield opened.first
        watch.waiting()
        if assembler is not None:
            assembler.feed(opened.first)
        async for block in events:
            watch.sending()
            sent += len(block)
            yield block
            watch.waiting()
            if assembler is not None:
                assembler.feed(block)
    except GatewayError as err:
        assembler = None
        attempt.broke(services, call, backend, err)
        yield error_event(err)
    except asyncio.CancelledError:
        assembler = None
        reason = watch.claim("drain", "idle", "deadline")
        if reason is None:
            raise
        cut = cut_short(reason, backend.name, backend.upstream.idle_timeout_s)
        m.cancellations.labels(reason).inc()
        if reason == "idle":
            attempt.broke(services, call, backend, cut)
        call.status = cut.http_status
        yield error_event(cut)
    finally:
        breaker.in_flight -= 1
        await events.aclose()
        charge(services, call, backend, usage, sent)
    body = assembler.body(usage) if assembler is not None else None
    if body is not None:
        await caching.store(services, call, cache, body, usage, opened.dialect)
        _after(services, call, shadow, body)
