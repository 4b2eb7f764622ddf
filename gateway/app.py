"""The ASGI app factory. Nothing happens at import time; the lifespan builds Services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
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
from gateway.errors import GatewayError, InvalidRequest, NotFound, error_type_for_status
from gateway.log import setup_logging
from gateway.metrics import Metrics
from gateway.services import Services
from gateway.settings import Settings

log = logging.getLogger("gateway.app")


def _json_error(status: int, message: str, code: str | None = None) -> Response:
    """An OpenAI error body for a status that has no GatewayError class (405, 500, ...)."""
    body = {
        "error": {
            "message": message,
            "type": error_type_for_status(status),
            "param": None,
            "code": code,
        }
    }
    return Response(orjson.dumps(body), status, media_type="application/json")


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


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return _json_error(
        500, "The gateway hit an internal error; it has been logged.", "internal_error"
    )


def _gateway_error_response(err: GatewayError) -> Response:
    return Response(err.json(), err.http_status, err.headers, media_type="application/json")


class InferenceFastPath:
    """Sends the inference routes straight to their endpoints; everything else to FastAPI.

    The inference routes are plain request → response functions that raise nothing but
    GatewayError (rendered inside the pipeline), so FastAPI's middleware stack and router
    add nothing for them but per-request cost.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.routes: dict[str, Callable[[Request], Awaitable[Response]]] = {
            route.path: route.endpoint for route in openai.ROUTES
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.routes.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self.app
                request = Request(scope, receive)
                try:
                    response = await endpoint(request)
                except Exception as exc:
                    response = await _unexpected(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> InferenceFastPath:
    """Build the app; each call has its own services and metrics registry."""
    settings = settings or Settings()
    setup_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.start(settings, metrics)
        app.state.services = services
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
    for route in openai.ROUTES:
        app.router.routes.append(route)
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
