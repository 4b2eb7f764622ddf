"""The key API, behind GATEWAY_ADMIN_KEY: create, list, show, change, rotate and revoke the
`sk-gw-...` keys of the policy's teams. A clear key is in the answer that made it, only.

    POST   /admin/keys                {team, name?, allowed_models?, limits?, budget_usd_per_day?,
                                       budget_usd_per_month?, expires_at?}  → key + its id
    GET    /admin/keys[?team=T]       every key, no secrets
    GET    /admin/keys/{id}
    POST   /admin/keys/{id}           change name, allowed_models, limits, expires_at
    POST   /admin/keys/{id}/rotate    a new secret for the same key; the old one stops working
    DELETE /admin/keys/{id}           revoke
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.api.admin import require_admin
from gateway.api.deps import ServicesDep
from gateway.keys import KeyChange, NewKey, parse

router = APIRouter(prefix="/admin/keys")


def _json(body: Any, status: int = 200) -> Response:
    # A clear key may be in the body: no cache may keep it.
    headers = {"cache-control": "no-store"}
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


@router.post("")
async def create_key(services: ServicesDep, request: Request) -> Response:
    """Make a key for a team of the policy; the answer holds the key, once."""
    require_admin(services, request)
    spec = parse(NewKey, await request.body())
    record, key = await services.keys.create(spec, services.state.loaded.policy)
    return _json(record.public(time.time(), key), 201)


@router.get("")
async def list_keys(services: ServicesDep, request: Request) -> Response:
    """Every key (revoked and expired ones too), without secrets."""
    require_admin(services, request)
    now = time.time()
    records = await services.keys.list(request.query_params.get("team"))
    return _json({"object": "list", "data": [r.public(now) for r in records]})


@router.get("/{key_id}")
async def show_key(services: ServicesDep, request: Request, key_id: str) -> Response:
    """One key, without its secret."""
    require_admin(services, request)
    record = await services.keys.get(key_id)
    return _json(record.public(time.time()))


@router.post("/{key_id}")
async def change_key(services: ServicesDep, request: Request, key_id: str) -> Response:
    """Change what a key may use and until when (every replica within a second)."""
    require_admin(services, request)
    change = parse(KeyChange, await request.body())
    record = await services.keys.change(key_id, change, services.state.loaded.policy)
    return _json(record.public(time.time()))


@router.post("/{key_id}/rotate")
async def rotate_key(services: ServicesDep, request: Request, key_id: str) -> Response:
    """A new secret for a key; the answer holds it, once."""
    require_admin(services, request)
    record, key = await services.keys.rotate(key_id)
    return _json(record.public(time.time(), key))


@router.delete("/{key_id}")
async def revoke_key(services: ServicesDep, request: Request, key_id: str) -> Response:
    """Revoke a key: refused on every replica within a second."""
    require_admin(services, request)
    record = await services.keys.revoke(key_id)
    return _json(record.public(time.time()))
