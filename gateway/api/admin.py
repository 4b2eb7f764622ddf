"""Admin endpoints (cache purge, policy reload), behind GATEWAY_ADMIN_KEY."""

from __future__ import annotations

import hmac

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.api.deps import ServicesDep
from gateway.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    PolicyError,
)
from gateway.reload import reload, rollback
from gateway.services import Services
from gateway.shadow.labels import store_unavailable

router = APIRouter(prefix="/admin")


def require_admin(services: Services, request: Request) -> None:
    """Refuse the request unless it carries the admin key (404 while admin is disabled)."""
    expected = services.settings.admin_key
    if expected is None or not expected.get_secret_value():
        raise NotFound("Admin endpoints are disabled: set GATEWAY_ADMIN_KEY to enable them.")
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise AuthenticationFailed("Incorrect admin key.")


@router.post("/cache/purge")
async def purge_cache(services: ServicesDep, request: Request) -> Response:
    """Delete cached answers of a tenant (`team` or `partition`) and/or a `model`."""
    require_admin(services, request)
    try:
        spec = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("The body must be a JSON object.") from exc
    if not isinstance(spec, dict):
        raise InvalidRequest("The body must be a JSON object.")
    team, partition, model = spec.get("team"), spec.get("partition"), spec.get("model")
    if team is not None:
        partition = f"team:{team}"
    for name, value in (("partition", partition), ("model", model)):
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"'{name}' must be a string.", param=name)
    deleted = await services.cache.purge(partition, model)
    services.semantic.purge()
    return Response(orjson.dumps({"deleted": deleted}), media_type="application/json")


@router.get("/policy")
async def active_policy(services: ServicesDep, request: Request) -> Response:
    """The active policy: version, file, the version a rollback would return to, last error."""
    require_admin(services, request)
    previous = services.previous_state
    body = {
        "policy_version": services.state.loaded.version,
        "policy_file": services.state.loaded.source,
        "previous_version": previous.loaded.version if previous is not None else None,
        "reload_error": services.reload_error,
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.post("/policy/rollback")
async def rollback_policy(services: ServicesDep, request: Request) -> Response:
    """Go back to the policy that served before the last reload."""
    require_admin(services, request)
    if not rollback(services):
        raise InvalidRequest("No earlier policy to roll back to.", code="no_previous_policy")
    body = {"policy_version": services.state.loaded.version}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/router")
async def live_router(services: ServicesDep, request: Request) -> Response:
    """The classifier artifact this replica serves, and the one the replicas share."""
    require_admin(services, request)
    try:
        shared = await services.adapter.store.current()
    except Exception as exc:
        raise store_unavailable() from exc
    body = {"classifier_version": services.classifier.version, "shared_version": shared}
    return Response(orjson.dumps(body), media_type="application/json")


@router.post("/router/rollback")
async def rollback_router(services: ServicesDep, request: Request) -> Response:
    """Serve the artifact that was live before the current one, on every replica."""
    require_admin(services, request)
    try:
        version = await services.adapter.rollback()
    except Exception as exc:
        raise store_unavailable() from exc
    if version is None:
        raise InvalidRequest("No earlier artifact to roll back to.", code="no_previous_artifact")
    body = {"classifier_version": version}
    return Response(orjson.dumps(body), media_type="application/json")


@router.post("/policy/reload")
async def reload_policy(services: ServicesDep, request: Request) -> Response:
    """Reload the policy file now; a bad file keeps the old policy and says why."""
    require_admin(services, request)
    try:
        reload(services)
    except PolicyError as exc:
        raise InvalidRequest(str(exc), code="invalid_policy") from exc
    body = {"policy_version": services.state.loaded.version}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/labels")
async def labels(services: ServicesDep, request: Request) -> Response:
    """Label records as JSON lines (`since` epoch seconds, `team`, `model` filter)."""
    require_admin(services, request)
    query = request.query_params
    try:
        since = float(query["since"]) if "since" in query else None
    except ValueError as exc:
        raise InvalidRequest("`since` must be epoch seconds.", param="since") from exc
    try:
        records = await services.shadower.labels.read(since, query.get("team"), query.get("model"))
    except Exception as exc:  # Redis trouble: say so, never a 500
        raise store_unavailable() from exc
    body = b"".join(orjson.dumps(r) + b"\n" for r in records)
    return Response(body, media_type="application/x-ndjson")
