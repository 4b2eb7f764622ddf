"""POST /v1/feedback: an application's own verdict on an answer joins the label stream.

`{"request_id": "...", "label": 0.0-1.0}` with the caller's key: the request must be one
this tenant made and that was retained (its team opted in to prompt retention).
"""

from __future__ import annotations

import math
import time

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.api.deps import ServicesDep
from gateway.errors import InvalidRequest, NotFound
from gateway.shadow.labels import store_unavailable

router = APIRouter()


@router.post("/v1/feedback")
async def feedback(services: ServicesDep, request: Request) -> Response:
    """Record a label for a retained request of the caller's tenant."""
    tenant = services.state.keys.authenticate(request.headers.get("authorization"))
    try:
        body = orjson.loads(await request.body() or b"null")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("The body must be a JSON object.") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    request_id, label = body.get("request_id"), body.get("label")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidRequest("`request_id` must be a non-empty string.", param="request_id")
    if not _is_label(label):
        raise InvalidRequest("`label` must be a number in [0, 1].", param="label")
    assert isinstance(label, int | float)
    shadower = services.shadower
    try:
        kept = await shadower.retained.find(tenant.partition, request_id)
    except Exception as exc:  # Redis trouble: say so, never a 500
        raise store_unavailable() from exc
    if kept is None:
        raise NotFound(
            f"No retained request `{request_id}` for this key (unknown, expired, or its team "
            "does not retain prompts).",
            param="request_id",
        )
    record = {
        "id": request_id,
        "messages": kept.get("messages"),
        "label": float(label),
        "source": "feedback",
        "team": tenant.team,
        "model": kept.get("model"),
        "score": kept.get("score"),
        "ts": time.time(),
    }
    try:
        await shadower.labels.add(record)
    except Exception as exc:
        raise store_unavailable() from exc
    services.metrics.labels_made.labels(str(kept.get("model")), "feedback").inc()
    return Response(
        orjson.dumps({"id": request_id, "recorded": True}), media_type="application/json"
    )


def _is_label(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0.0 <= value <= 1.0
