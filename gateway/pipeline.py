"""One request, top to bottom: auth → parse → cache → classify → plan → attempt → account.

Routes call `handle`; each step is a small function below, in the order it runs.
"""

from __future__ import annotations

import random
import re
import time

from starlette.types import Receive

from gateway.asgi import Reply, RequestHead, read_body
from gateway.attempt import answer, cache_plan, from_cache
from gateway.call import Call, classify, error_response
from gateway.errors import GatewayError
from gateway.limits import estimate
from gateway.planner import Plan, make_plan, resolve_model
from gateway.policy import Endpoint
from gateway.protocol import parse_body, validate
from gateway.services import Services

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_for(head: RequestHead) -> str:
    """The caller's `x-request-id` when it is sane, else a new one."""
    given = head.request_id
    if given and _REQUEST_ID.match(given):
        return given
    # Unique, not secret: a PRNG draw avoids a getrandom syscall per request.
    return f"{random.getrandbits(128):032x}"


def plan(services: Services, call: Call) -> Plan:
    """Choose targets by policy, score and backend health; feed the share calibrators."""
    state = call.state
    route = state.loaded.policy.models[call.model]
    calibrators = state.calibrators

    def threshold(rule: int) -> float:
        calibrator = calibrators.get((call.model, rule))
        return calibrator.threshold() if calibrator is not None else 1.0

    chosen = make_plan(
        state.loaded.policy,
        call.model,
        route,
        call.endpoint,
        call.score,
        threshold,
        services.health,
    )
    if call.score is not None and calibrators:
        closed = chosen.targets[0].tier == "closed"
        for (model, _), calibrator in calibrators.items():
            if model == call.model:
                calibrator.observe(call.score)
                calibrator.record(closed)
    call.plan = chosen
    return chosen


async def handle(
    services: Services, head: RequestHead, receive: Receive, endpoint: Endpoint
) -> Reply:
    """Serve one OpenAI API request end to end; every failure becomes an OpenAI error."""
    call = Call(endpoint, request_id_for(head), time.perf_counter(), services.state)
    try:
        call.tenant = call.state.keys.authenticate(head.authorization)
        raw = await read_body(receive, head, services.settings.max_body_bytes)
        call.body = parse_body(raw)
        call.asked = validate(endpoint, call.body)
        call.stream = endpoint != "embeddings" and call.body.get("stream") is True
        allowed = call.tenant.allowed_models
        call.model, _ = resolve_model(call.state.loaded.policy, call.asked, allowed)
        est = estimate(call.state.loaded.policy, call.model, endpoint, call.body, len(raw))
        call.admission = await services.limiter.admit(
            call.tenant, est.prompt_tokens, est.reserve_usd
        )
        cache = cache_plan(call, head)
        hit = await from_cache(services, call, cache)
        if hit is not None:  # no routing to do; the entry keeps the score
            return hit
        classify(services, call)
        plan(services, call)
        return await answer(services, call, cache)
    except GatewayError as err:
        services.limiter.release(call.admission)
        return error_response(services, call, err)
