"""How routes reach the worker's Services."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from gateway.services import Services


def get_services(request: Request) -> Services:
    """The Services the lifespan stored on the app."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
