"""Security headers on every response: a strict CSP, no sniffing, no framing, HSTS on TLS."""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from backend.routes import NO_CSP_GROUPS, group_of

# Scripts only from our own origin (htmx and app.js are vendored), so an injected <script>
# cannot run. Inline style attributes stay allowed: progress bars set their width that way.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
    "object-src 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"


def security_headers_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path: str = scope["path"]
        # Behind the trusted proxy, uvicorn has already set the scheme from X-Forwarded-Proto.
        on_tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
                if group_of(path) not in NO_CSP_GROUPS:
                    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                if on_tls:
                    headers["Strict-Transport-Security"] = HSTS
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware
