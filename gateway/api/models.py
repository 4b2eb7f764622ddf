"""GET /v1/models: the model names the policy offers."""

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
    names = [n for n in services.state.loaded.policy.models if n != WILDCARD]
    if tenant.allowed_models is not None:
        names = [n for n in names if n in tenant.allowed_models]
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
