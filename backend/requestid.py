"""X-Request-ID on every answer, and one JSON access line per request carrying it.

The id is the caller's (nginx passes the client's, or its own `$request_id`) when it is a
plain token, else a fresh UUID. It is bound to the request's context, so every log line
written while the request runs names it (logs.py), and the response echoes it.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import cast

from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from opentelemetry import trace

from backend.logs import REQUEST_ID
from backend.routes import QUIET_GROUPS, group_of

HEADER = "X-Request-ID"
# Letters, digits and a few separators: enough for UUIDs, nginx's hex ids and most tracers',
# and nothing that could forge a log field or a header.
_USABLE = re.compile(r"^[A-Za-z0-9._:@+=/-]{1,128}$")

access_logger = logging.getLogger("longhaul.access")


def request_id_from(value: str | None) -> str:
    """The caller's id when usable, else a new random UUID."""
    if value is not None and _USABLE.match(value):
        return value
    return str(uuid.uuid4())


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Bind the request id, echo it as X-Request-ID, and log the request when it ends."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request_id = request_id_from(MutableScopeHeaders(scope).get(HEADER))
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering
        # The request's span is current while the app answers, and over when the line is
        # written (tracing runs inside this layer): keep it so the line names its trace.
        span: trace.Span = trace.INVALID_SPAN

        async def send_with_id(message: Message) -> None:
            nonlocal status, span
            if message["type"] == "http.response.start":
                status = message["status"]
                span = trace.get_current_span()
                MutableScopeHeaders.from_message(message)[HEADER] = request_id
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            method, path = cast("HTTPScope", scope)["method"], scope["path"]
            # The client address is the one uvicorn took from X-Forwarded-For, and only when
            # the request came from a trusted proxy (FORWARDED_ALLOW_IPS).
            client = scope.get("client")
            quiet = group_of(path) in QUIET_GROUPS
            with trace.use_span(span, end_on_exit=False):
                access_logger.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "%s %s %d",
                    method,
                    path,
                    status,
                    extra={
                        "method": method,
                        "path": path,
                        "status": status,
                        "client": client[0] if client else "",
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
            REQUEST_ID.reset(token)

    return middleware
