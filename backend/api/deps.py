"""Dependencies the controllers share: the process's services and who is asking."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State

from backend.events import EventHub
from backend.owners import OWNER_COOKIE, PUBLIC_OWNER, owner_from_cookie
from backend.services import Services


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


def provide_hub(state: State) -> EventHub:
    hub: EventHub = state.hub
    return hub


def provide_requester(request: Request[Any, Any, Any], state: State) -> str:
    services: Services = state.services
    owner = owner_from_cookie(request.cookies.get(OWNER_COOKIE), services.settings.secret_key)
    return owner or PUBLIC_OWNER
