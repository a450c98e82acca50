"""What every HTTP answer shares, matched route or not: the outer layer around the whole app.

Litestar runs the `middleware=` of an app only once a route has matched: its router answers
404 and 405 before any of it, so those answers had no request id, no security headers, no
rate limit and no access line. `Litestar.asgi_handler` is what the app runs for every HTTP
request (after putting itself in the scope, which the rate limiter reads), so the layer wraps
that instead, and every answer, Litestar's own included, passes through each concern once.
"""

from __future__ import annotations

from litestar import Litestar

from backend.cors import allowed_origins, cors_middleware
from backend.head import head_as_get
from backend.metrics.http import measure_requests
from backend.ratelimit import rate_limit_middleware
from backend.requestid import request_id_middleware
from backend.security import security_headers_middleware
from backend.settings import Settings


def wrap_every_answer(app: Litestar, settings: Settings) -> None:
    """Put request metrics, request ids, access lines, security headers, CORS, rate limits and
    HEAD around `app`.

    Outermost first: metrics and the request id and access line cover everything, a 429 gets
    the security and CORS headers too, and HEAD is counted like the GET it runs as.
    """
    handler = head_as_get(app.asgi_handler)
    handler = rate_limit_middleware(handler)
    handler = cors_middleware(handler, allowed_origins(settings.cors_allow_origins))
    handler = security_headers_middleware(handler)
    handler = request_id_middleware(handler)
    app.asgi_handler = measure_requests(handler, app)
