"""GET /v1/models: the model names the policy offers, and those behind a `"*"` route."""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.api.deps import ServicesDep
from gateway.errors import ModelNotFound, PermissionDenied
from gateway.planning import WILDCARD

router = APIRouter()
_CREATED = int(time.time())


def _model(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": _CREATED, "owned_by": "gateway"}


@router.get("/v1/models")
async def list_models(services: ServicesDep, request: Request) -> Response:
    """Every model name of the policy that the caller may use."""
    tenant = services.state.keys.authenticate(request.headers.get("authorization"))
    policy = services.state.loaded.policy
    allowed = tenant.allowed_models
    names = [n for n in policy.models if n != WILDCARD and (allowed is None or n in allowed)]
    wildcard = policy.models.get(WILDCARD)
    if wildcard is not None and (allowed is None or WILDCARD in allowed):
        reached = dict.fromkeys(name for rule in wildcard.rules for name in rule.to)
        backends = [policy.backends[name] for name in reached]
        names = list(dict.fromkeys([*names, *await services.catalog.models(backends)]))
    body = {"object": "list", "data": [_model(n) for n in names]}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/v1/models/{name:path}")
async def get_model(name: str, services: ServicesDep, request: Request) -> Response:
    """One model name."""
    tenant = services.state.keys.authenticate(request.headers.get("authorization"))
    models = services.state.loaded.policy.models
    if name not in models and WILDCARD not in models:
        raise ModelNotFound(f"The model `{name}` does not exist.", param="model")
    if tenant.allowed_models is not None and name not in tenant.allowed_models:
        raise PermissionDenied(f"Your key may not use the model `{name}`.", param="model")
    return Response(orjson.dumps(_model(name)), media_type="application/json")
