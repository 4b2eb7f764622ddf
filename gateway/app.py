"""The ASGI app factory. Nothing happens at import time; the lifespan builds Services."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import __version__
from gateway.api import admin, health, models, openai
from gateway.asgi import ClientGone, Reply, read_head, send_reply
from gateway.errors import GatewayError, InvalidRequest, NotFound, error_type_for_status
from gateway.log import setup_logging
from gateway.metrics import Metrics
from gateway.pipeline import handle
from gateway.services import Services
from gateway.settings import Settings

log = logging.getLogger("gateway.app")


_INTERNAL = "The gateway hit an internal error; it has been logged."


def _error_body(status: int, message: str, code: str | None = None) -> bytes:
    """An OpenAI error body for a status that has no GatewayError class (405, 500, ...)."""
    error = {"message": message, "type": error_type_for_status(status), "param": None}
    return orjson.dumps({"error": {**error, "code": code}})


def _json_error(status: int, message: str, code: str | None = None) -> Response:
    """`_error_body` as a Starlette response, for the FastAPI routes."""
    return Response(_error_body(status, message, code), status, media_type="application/json")


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return _gateway_error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _gateway_error_response(NotFound(f"Unknown path: {request.url.path}"))
    return _json_error(exc.status_code, str(exc.detail))


async def _validation_error(request: Request, exc: Exception) -> Response:
    return _gateway_error_response(InvalidRequest(f"Invalid request: {exc}"))


def _internal_error(path: str) -> bytes:
    """Log the exception being handled; the 500 body the client gets (no details)."""
    log.exception("unhandled error", extra={"path": path})
    return _error_body(500, _INTERNAL, "internal_error")


async def _unexpected(request: Request, exc: Exception) -> Response:
    body = _internal_error(request.url.path)
    return Response(body, 500, media_type="application/json")


def _gateway_error_response(err: GatewayError) -> Response:
    return Response(err.json(), err.http_status, err.headers, media_type="application/json")


class InferenceFastPath:
    """Serves the inference routes as raw ASGI; everything else goes to FastAPI.

    The inference routes raise nothing but GatewayError, rendered inside the pipeline, so
    FastAPI's middleware stack, router and Request/Response objects would add nothing for
    them but per-request cost.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        endpoint = openai.ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            reply = Reply(405, {"allow": "POST"}, _error_body(405, "Method Not Allowed"))
        else:
            services: Services = self.app.state.services
            try:
                reply = await handle(services, read_head(scope), receive, endpoint)
            except ClientGone:
                return
            except Exception:
                reply = Reply(500, body=_internal_error(scope["path"]))
        await send_reply(reply, receive, send)


# The collector's youngest generation runs every 700 allocations by default: several times
# per request here. Everything built at startup (app, policy, classifier tables) is frozen
# out of the collector's view, and the young generation is collected less often; measured
# with bench/run_side_by_side.sh, ~10% less CPU per request (docs/performance.md).
GC_THRESHOLDS = (20_000, 20, 50)


def _tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(settings: Settings | None = None) -> InferenceFastPath:
    """Build the app; each call has its own services and metrics registry."""
    settings = settings or Settings()
    setup_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.start(settings, metrics)
        app.state.services = services
        _tune_gc()
        log.info(
            "gateway started",
            extra={
                "policy": str(settings.policy),
                "policy_version": services.state.loaded.version,
                "cache": services.cache.kind,
            },
        )
        try:
            yield
        finally:
            await services.close()

    app = FastAPI(
        title="Model-routing gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.metrics = metrics
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    return InferenceFastPath(app)


def create_app_from_env() -> InferenceFastPath:
    """Factory for `uvicorn --factory` with several workers: settings from GATEWAY_* only."""
    return create_app(Settings())
