"""The API's request metrics and its `GET /metrics`.

Requests are measured in the outermost layer (edges.py), so Litestar's own 404s and 405s and
the rate limiter's 429s count too. The route label is the route's template as Litestar matched
it (`/v1/download/status/{job_id}`), never the raw path, so one label stands for every job id;
a path no route matches is `unmatched`, whatever it is. Answers made before routing (a 429, a
CORS preflight) and HEAD (run as a GET on a copy of the scope, head.py) are matched here by the
same router.
"""

from __future__ import annotations

import time
from typing import Any, cast

from litestar import Litestar, Request, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.response import Response
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from litestar.utils import normalize_path
from prometheus_client.exposition import choose_encoder

from backend.metrics.api import (
    HTTP_REQUEST_DURATION,
    HTTP_REQUESTS,
    UNMATCHED,
    exposition_registry,
)
from backend.routes import METRICS_PATH

# Any other method a client makes up is `other`: the label set stays bounded.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(scope: Scope, app: Litestar) -> str:
    """The template of the route that answered (or would answer) this request, or UNMATCHED."""
    template = scope.get("path_template")
    if template:
        return str(template)
    method = cast("HTTPScope", scope)["method"]
    try:
        matched = app.asgi_router.handle_routing(
            path=normalize_path(scope["path"]), method="GET" if method == "HEAD" else method
        )
    except Exception:  # NotFound, MethodNotAllowed: no route of ours
        return UNMATCHED
    return str(matched[4])


def measure_requests(handler: ASGIApp, app: Litestar) -> ASGIApp:
    """Count every HTTP answer by route, method and status, and time it to its status line."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await handler(scope, receive, send)
            return
        started = time.perf_counter()
        answered: float | None = None
        status = 500  # what the client sees if the app raises before answering

        async def send_measured(message: Message) -> None:
            nonlocal answered, status
            if message["type"] == "http.response.start" and answered is None:
                answered, status = time.perf_counter(), message["status"]
            await send(message)

        try:
            await handler(scope, receive, send_measured)
        finally:
            route = route_of(scope, app)
            asked = cast("HTTPScope", scope)["method"]
            method = asked if asked in _METHODS else "other"
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            elapsed = (answered if answered is not None else time.perf_counter()) - started
            HTTP_REQUEST_DURATION.labels(route, method).observe(elapsed)

    return middleware


_EXAMPLE = """\
# HELP longhaul_jobs_submitted_total Requests to start a job (API and pages): …
# TYPE longhaul_jobs_submitted_total counter
longhaul_jobs_submitted_total{outcome="accepted"} 42.0
longhaul_jobs_submitted_total{outcome="replayed"} 3.0
longhaul_jobs_submitted_total{outcome="refused"} 0.0
# HELP longhaul_sse_streams Event streams open in this process: …
# TYPE longhaul_sse_streams gauge
longhaul_sse_streams{stream="job"} 2.0
longhaul_sse_streams{stream="page"} 5.0
"""

METRICS_RESPONSE = ResponseSpec(
    str,
    media_type="text/plain",
    generate_examples=False,
    description="This API process's metrics in the Prometheus text format (OpenMetrics when "
    "the scraper asks for it in `Accept`): requests by route template, method and status, "
    "their latency, open event streams, jobs submitted; `process_*` too. Each process counts "
    "its own: scrape every API process directly, not through the proxy.",
    examples=[Example(summary="an excerpt", value=_EXAMPLE)],
)


@get(
    METRICS_PATH,
    tags=["operations"],
    summary="Prometheus metrics of this API process",
    cache=False,
    responses={200: METRICS_RESPONSE},
    sync_to_thread=False,
)
def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(exposition_registry()), media_type=content_type)
