"""HEAD wherever GET works (RFC 9110 §9.3.2): the GET's status and headers, and no body.

Litestar routes HEAD only to handlers declared for it, and refuses to declare it on handlers
that return a body; so a HEAD request is run as the GET and its body dropped here.

Event streams get no exception: their headers go out, and the answer is then complete. Once
it is, the server tells the app the client has gone (ASGI sends `http.disconnect` to a
`receive` after the response), so the stream stops as it would for a closed EventSource and
gives its slot back (api/sse.py), instead of running on for no one.
"""

from __future__ import annotations

from typing import Any, cast

from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

_END: Any = {"type": "http.response.body", "body": b"", "more_body": False}


def head_as_get(app: ASGIApp) -> ASGIApp:
    """Answer HEAD as `app` answers GET, without the body; list HEAD wherever GET is allowed."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        send_allowing_head = _allowing_head(send)
        if cast("HTTPScope", scope)["method"] != "HEAD":
            await app(scope, receive, send_allowing_head)
            return
        answered = False

        async def send_head(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                await send_allowing_head(message)
                await send(_END)
                answered = True
            # Anything after the start (the GET's body, a stream's frames) is dropped.

        # The server keeps its own scope, still HEAD, and so frames the answer without a body.
        await app(cast("HTTPScope", {**scope, "method": "GET"}), receive, send_head)

    return middleware


def _allowing_head(send: Send) -> Send:
    async def send_allowing_head(message: Message) -> None:
        if message["type"] == "http.response.start":
            # A 405, or an OPTIONS answer, lists the methods a route takes: GET brings HEAD.
            headers = MutableScopeHeaders.from_message(message)
            allow = headers.get("allow")
            if allow is not None:
                methods = [m.strip() for m in allow.split(",") if m.strip()]
                if "GET" in methods and "HEAD" not in methods:
                    headers["Allow"] = ", ".join(sorted([*methods, "HEAD"]))
        await send(message)

    return send_allowing_head
