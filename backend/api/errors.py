"""The one place that maps errors to HTTP responses: JSON bodies naming what is wrong.

A person who navigated to a page (not the JSON API, not an htmx swap) gets the same sentence
on an HTML page instead of raw JSON.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.response import Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from redis.exceptions import RedisError

from backend.downloads import (
    EnqueueFailed,
    IdempotencyConflict,
    InvalidInput,
    JobAlreadyFinished,
    UnknownJob,
)
from backend.jobs import ActiveJobsLimit
from backend.ratelimit import RateLimited
from backend.retries import NotRetryable
from backend.routes import HTML_GROUPS, group_of
from backend.storage import StorageError

logger = logging.getLogger(__name__)


def _body(status_code: int, detail: str, extra: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status_code": status_code, "detail": detail}
    if extra:
        body["extra"] = extra
    return body


def _wants_page(request: Request[Any, Any, Any]) -> bool:
    return (
        group_of(request.url.path) in HTML_GROUPS
        and "text/html" in request.headers.get("accept", "")
        and "hx-request" not in request.headers
    )


def _answer(
    request: Request[Any, Any, Any],
    status_code: int,
    detail: str,
    extra: Any = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    if _wants_page(request):
        return Template(
            "error.html",
            context={"status_code": status_code, "detail": detail},
            status_code=status_code,
            headers=headers,
        )
    return Response(
        _body(status_code, detail, extra),
        status_code=status_code,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _validation_detail(exc: ValidationException) -> str:
    # Litestar says "Validation failed for POST /path"; the useful sentence is in `extra`.
    extra = exc.extra if isinstance(exc.extra, list) else []
    messages = []
    for item in extra:
        if isinstance(item, dict) and item.get("message"):
            key = item.get("key")
            message = str(item["message"])
            if message == f"'{key}'":
                # A body that is not there at all surfaces as a bare KeyError of `data`.
                message, key = "request body is empty; expected a JSON object", "body"
            messages.append(f"{key}: {message}" if key and key not in message else message)
    return "; ".join(messages) or exc.detail


# Litestar's stock sentences for these say what happened but not what to do about it.
_PLAIN_DETAILS = {
    404: lambda request: f"no route {request.url.path!r}",
    405: lambda request: f"method {request.method} is not allowed on {request.url.path!r}",
    413: lambda request: "request body is too large",
}


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    detail = _validation_detail(exc) if isinstance(exc, ValidationException) else exc.detail
    stock = _PLAIN_DETAILS.get(exc.status_code)
    if stock is not None and detail in {
        "Not Found",
        "Method Not Allowed",
        "Request Entity Too Large",
    }:
        detail = stock(request)
    return _answer(request, exc.status_code, detail, exc.extra, dict(exc.headers or {}))


def unavailable_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    which = (
        "the job store (Redis)"
        if isinstance(exc, RedisError | ConnectionError)
        else "object storage (S3)"
    )
    logger.warning("%s %s: %s unavailable: %s", request.method, request.url.path, which, exc)
    detail = f"{which} is unavailable; try again shortly"
    return _answer(request, HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": "2"})


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _answer(request, HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


def domain_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, InvalidInput):
        status, detail = 400, str(exc)
        extra: Any = [{"key": exc.field, "message": exc.message}]
    elif isinstance(exc, UnknownJob):
        status, detail, extra = 404, str(exc), None
    elif isinstance(exc, IdempotencyConflict):
        status, detail, extra = 422, str(exc), None
    elif isinstance(exc, JobAlreadyFinished | NotRetryable):
        status, detail = 409, str(exc)
        extra = {"status": exc.record.status.value}
    else:
        status, detail, extra = 503, "the job could not be queued; try again shortly", None
    return _answer(request, status, detail, extra)


def bad_encoding_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # Litestar lets a non-UTF-8 JSON body escape as UnicodeDecodeError; it is the client's.
    return _answer(request, 400, f"body: JSON is malformed: not valid UTF-8 ({exc})")


def active_jobs_limit_handler(
    request: Request[Any, Any, Any], exc: ActiveJobsLimit
) -> Response[Any]:
    # A limit like the rate limit, so the same status and a retry hint: places free as jobs end.
    detail = f"too many active jobs for this client (limit {exc.limit}); wait for one to end"
    return _answer(request, 429, detail, headers={"Retry-After": "5"})


def rate_limited_handler(request: Request[Any, Any, Any], exc: RateLimited) -> Response[Any]:
    return _answer(request, 429, str(exc), headers={"Retry-After": str(exc.retry_after)})


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    RateLimited: rate_limited_handler,
    ActiveJobsLimit: active_jobs_limit_handler,
    UnicodeDecodeError: bad_encoding_handler,
    HTTPException: http_exception_handler,
    InvalidInput: domain_error_handler,
    UnknownJob: domain_error_handler,
    JobAlreadyFinished: domain_error_handler,
    NotRetryable: domain_error_handler,
    EnqueueFailed: domain_error_handler,
    IdempotencyConflict: domain_error_handler,
    RedisError: unavailable_handler,
    ConnectionError: unavailable_handler,
    StorageError: unavailable_handler,
    Exception: internal_error_handler,
}

# Answered on purpose (a 4xx, or a 503 while Redis or S3 is away): not faults of the code, so
# never reported as errors (errorreporting.py). An HTTPException is judged by its status.
EXPECTED_ERRORS: tuple[type[Exception], ...] = tuple(
    error for error in EXCEPTION_HANDLERS if error not in (Exception, HTTPException)
)
