"""Dependencies the controllers share: the process's services and who is asking."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException

from backend.api.health import HealthProbes
from backend.auth import AuthError, client_identity, resolve_owner
from backend.events import EventHub
from backend.owners import OWNER_COOKIE
from backend.services import Services


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


def provide_hub(state: State) -> EventHub:
    hub: EventHub = state.hub
    return hub


def provide_health_probes(state: State) -> HealthProbes:
    probes: HealthProbes = state.health_probes
    return probes


def provide_requester(request: Request[Any, Any, Any], state: State) -> str:
    """The owner of the request (see backend/auth.py); 401 for a bad or missing token."""
    services: Services = state.services
    try:
        return resolve_owner(
            request.headers.get("authorization"),
            request.cookies.get(OWNER_COOKIE),
            services.settings,
        )
    except AuthError as exc:
        raise NotAuthorizedException(
            detail=f"Authorization: {exc}", headers={"WWW-Authenticate": "Bearer"}
        ) from exc


def provide_client(request: Request[Any, Any, Any], state: State) -> str:
    """Whose limits the request counts against: a token's owner, else the client address."""
    services: Services = state.services
    host = request.client.host if request.client else None
    return client_identity(request.headers.get("authorization"), host, services.settings)
