"""The ASGI app factory. Nothing happens at import time; the lifespan builds Services.

    InferenceDoor (raw ASGI)     /v1/chat/completions, /v1/completions, /v1/embeddings,
                                 /v1/messages, /v1/responses
      └── every other path ──▶ FastAPI: /v1/models, /v1/messages/count_tokens,
                                 /v1/responses/{id}[/input_items], /healthz, /readyz,
                                 /metrics, /admin/* (/admin/keys: api/keys.py)

Errors on both sides go through `gateway.errors.render`, and every answer carries an
`x-request-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__, breaker_sync, health, housekeeping, load, reload
from gateway.api import admin, feedback, keys, messages, models, probes, responses
from gateway.api.inference import InferenceDoor, internal_error, request_id_for
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    dialect_for,
    for_status,
    render,
)
from gateway.log import setup_logging
from gateway.metrics import Metrics
from gateway.services import Services
from gateway.settings import Settings

log = logging.getLogger("gateway.app")


def _request_id(request: Request) -> str:
    request_id: str = request.scope["gateway.request_id"]
    return request_id


def _response(err: GatewayError, request: Request) -> Response:
    rendered = render(err, _request_id(request), dialect_for(request.url.path))
    return Response(rendered.body, rendered.status, rendered.headers, media_type="application/json")


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return _response(exc, request)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _response(NotFound(f"Unknown path: {request.url.path}"), request)
    return _response(for_status(exc.status_code, str(exc.detail)), request)


async def _validation_error(request: Request, exc: Exception) -> Response:
    return _response(InvalidRequest(f"Invalid request: {exc}"), request)


async def _unexpected(request: Request, exc: Exception) -> Response:
    return _response(internal_error(request.url.path), request)


class RequestIds:
    """Gives every FastAPI route's answer an `x-request-id` (the caller's if sane)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        request_id = request_id_for(given.decode("latin-1"))
        scope["gateway.request_id"] = request_id
        raw_id = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", raw_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)


# The collector's youngest generation runs every 700 allocations by default: several times
# per request here. Everything built at startup (app, policy, classifier tables) is frozen
# out of the collector's view, and the young generation is collected less often; measured
# with bench/run_side_by_side.sh, ~10% less CPU per request (docs/performance.md).
GC_THRESHOLDS = (20_000, 20, 50)


def _tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(
    settings: Settings | None = None, *, drain_on_sigterm: bool = False
) -> InferenceDoor:
    """Build the app; each call has its own services and metrics registry.

    ``drain_on_sigterm``: the server's process is this app's (``gateway serve``); SIGTERM
    starts the drain (`gateway.cancellation.Drain`) before the server stops accepting.
    """
    settings = settings or Settings()
    setup_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.start(settings, metrics)
        housekeeping.publish_info(services)
        if settings.policy_reload_s > 0:
            services.loops.append(asyncio.create_task(reload.watch(services)))
        services.loops.append(asyncio.create_task(housekeeping.run(services)))
        services.loops.append(asyncio.create_task(health.run(services)))
        services.loops.append(asyncio.create_task(load.run(services)))
        breaker_sync.refresh(services)  # before the first request: its circuits are shared
        services.loops.append(asyncio.create_task(breaker_sync.run(services)))
        services.loops.append(asyncio.create_task(services.adapter.run()))
        with contextlib.suppress(Exception):  # a replica that restarts serves the live artifact
            await services.adapter.follow()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # One process: SIGHUP reloads the policy (with workers, uvicorn restarts them).
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, reload.on_sighup, services)
        if services.keys.disabled is None:
            services.loops.append(asyncio.create_task(services.keys.watch()))
        app.state.services = door.services = services
        if drain_on_sigterm:
            services.drain.install(settings.drain_delay_s)
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
            door.services = None
            await services.close()

    app = FastAPI(
        title="Model-routing gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(models.router)
    app.include_router(messages.router)
    app.include_router(responses.router)
    app.include_router(probes.router)
    app.include_router(admin.router)
    app.include_router(keys.router)
    app.include_router(feedback.router)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    door = InferenceDoor(RequestIds(app))
    return door


def create_app_from_env() -> InferenceDoor:
    """Factory for `uvicorn --factory` with several workers: settings from GATEWAY_* only."""
    return create_app(Settings(), drain_on_sigterm=True)
