"""CORS for the origins in CORS_ALLOW_ORIGINS, on every answer the API gives them.

Litestar's own CORS sits inside its handler, below the layer that rate limits (edges.py), so a
429 would reach the page without `Access-Control-Allow-Origin` and the page could read neither
the refusal nor its `Retry-After`. Here it wraps the rate limiter instead. Origins match
exactly; credentials are not allowed (API clients send bearer tokens, not cookies).
"""

from __future__ import annotations

from typing import Any, cast

from litestar.datastructures import Headers, MutableScopeHeaders
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from backend.ratelimit import LIMIT_HEADERS
from backend.requestid import HEADER as REQUEST_ID_HEADER

ALLOW_METHODS = "GET, HEAD, POST, DELETE"
ALLOW_HEADERS = f"Authorization, Content-Type, Idempotency-Key, Last-Event-ID, {REQUEST_ID_HEADER}"
# Everything a page needs to follow a job, correlate a request, and back off when refused.
# `Link` carries the next page of GET /v1/downloads (RFC 8288).
EXPOSE_HEADERS = ", ".join(("Location", "Link", "Retry-After", REQUEST_ID_HEADER, *LIMIT_HEADERS))
MAX_AGE_SECONDS = 600


def allowed_origins(setting: str) -> frozenset[str]:
    """The origins of a comma-separated CORS_ALLOW_ORIGINS value."""
    return frozenset(origin.strip() for origin in setting.split(",") if origin.strip())


def cors_middleware(app: ASGIApp, origins: frozenset[str]) -> ASGIApp:
    """Answer preflights from `origins` and let them read every other answer; no-op if none."""
    if not origins:
        return app

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request_headers = Headers.from_scope(scope)
        origin = request_headers.get("origin")
        allowed = origin is not None and origin in origins
        if (
            allowed
            and cast("HTTPScope", scope)["method"] == "OPTIONS"
            and "access-control-request-method" in request_headers
        ):
            # Preflights are answered here, before the rate limiter: browsers cache them
            # for MAX_AGE_SECONDS, and they reach no handler.
            await _preflight(send, str(origin))
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                # The answer differs by Origin, so shared caches must keep them apart.
                headers.add("Vary", "Origin")
                if allowed:
                    headers["Access-Control-Allow-Origin"] = str(origin)
                    headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            await send(message)

        await app(scope, receive, send_with_cors)

    return middleware


async def _preflight(send: Send, origin: str) -> None:
    raw: list[Any] = [
        (b"access-control-allow-origin", origin.encode()),
        (b"access-control-allow-methods", ALLOW_METHODS.encode()),
        (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
        (b"access-control-max-age", str(MAX_AGE_SECONDS).encode()),
        (b"vary", b"Origin"),
        (b"content-length", b"0"),
    ]
    start: Any = {"type": "http.response.start", "status": 204, "headers": raw}
    await send(start)
    end: Any = {"type": "http.response.body", "body": b""}
    await send(end)
