"""Who the browser is (the signed owner cookie) and how it wants live updates."""

from __future__ import annotations

from typing import Any, Literal

from litestar import Request
from litestar.datastructures import Cookie

from backend.owners import OWNER_COOKIE, new_owner_cookie, owner_from_cookie
from backend.settings import Settings

# Chrome caps cookie lifetimes at 400 days; job records expire long before that anyway.
COOKIE_MAX_AGE = 400 * 24 * 3600
# Sent by app.js once the event stream has failed on this page: render polling cards.
LIVE_MODE_HEADER = "X-Live-Mode"

LiveMode = Literal["sse", "poll"]


class BrowserOwner:
    """The owner id of this browser, and the cookie to set when it had none (or a bad one)."""

    __slots__ = ("cookie", "owner")

    def __init__(self, owner: str, cookie: Cookie | None) -> None:
        self.owner = owner
        self.cookie = cookie

    @property
    def cookies(self) -> list[Cookie]:
        return [self.cookie] if self.cookie is not None else []


def browser_owner(request: Request[Any, Any, Any], settings: Settings) -> BrowserOwner:
    """The owner from the signed cookie; a fresh owner (and its cookie) when missing."""
    owner = owner_from_cookie(request.cookies.get(OWNER_COOKIE), settings.secret_key)
    if owner is not None:
        return BrowserOwner(owner, None)
    owner, value = new_owner_cookie(settings.secret_key)
    cookie = Cookie(
        key=OWNER_COOKIE,
        value=value,
        path="/",
        max_age=COOKIE_MAX_AGE,
        httponly=True,
        samesite="lax",
        # uvicorn sets the scheme from X-Forwarded-Proto behind the trusted proxy.
        secure=request.url.scheme == "https",
    )
    return BrowserOwner(owner, cookie)


def known_owner(request: Request[Any, Any, Any], settings: Settings) -> str | None:
    """The owner of a browser that already has a valid cookie, else None."""
    return owner_from_cookie(request.cookies.get(OWNER_COOKIE), settings.secret_key)


def live_mode(request: Request[Any, Any, Any]) -> LiveMode:
    return "poll" if request.headers.get(LIVE_MODE_HEADER, "").lower() == "poll" else "sse"
