"""What the OpenAPI schema shows beyond the types: examples, and the event stream's frames.

Only documentation lives here; the controllers refer to it from their route decorators.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import KwargDefinition

from backend.jobevents import JOB_EVENTS, JobEventName, ProgressEvent
from backend.models import CataloguePage, ErrorBody, HealthBody, JobPage, JobStatus

JOB_ID = "3f2b8c1e9d7a4b6c8e0f1a2b3c4d5e6f"
DOWNLOAD_URL = (
    "http://127.0.0.1:9000/downloads/archives/3f2b8c1e9d7a4b6c8e0f1a2b3c4d5e6f.zip"
    "?response-content-disposition=attachment%3B%20filename%3D%22Q3%20board%20minutes.zip%22"
    "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature=…"
)
_URLS = {
    "status_url": f"/v1/download/status/{JOB_ID}",
    "events_url": f"/v1/download/subscribe/{JOB_ID}",
}
_FIGURES = {"total_files": 2, "bytes_total": 9437184, "max_attempts": 4}

QUEUED: dict[str, Any] = {
    "job_id": JOB_ID,
    "status": "queued",
    "progress": 0,
    "processed_files": 0,
    "bytes_processed": 0,
    "attempt": 0,
    "queue_position": 3,
    "created_at": 1795917627.1,
    **_FIGURES,
    **_URLS,
}
PROCESSING = QUEUED | {
    "status": "processing",
    "queue_position": None,
    "progress": 42,
    "processed_files": 1,
    "bytes_processed": 3963617,
    "attempt": 1,
    "started_at": 1795917627.3,
}
RETRYING = PROCESSING | {
    "attempt": 2,
    "last_error": "object storage at s3.example refused to read '10001/a.pdf': Please reduce "
    "your request rate.",
    # The storage server's own answer, for operators; the card and events show `last_error`.
    "error_detail": "object storage at s3.example refused to read '10001/a.pdf': S3 operation "
    "failed; code: SlowDown, message: Please reduce your request rate., resource: "
    "/catalogue/10001/a.pdf, request_id: 17A3F0C2D, host_id: dd9025bab4ad464b",
}
READY = PROCESSING | {
    "status": "ready",
    "progress": 100,
    "processed_files": 2,
    "bytes_processed": 9437184,
    "finished_at": 1795917631.8,
    "expires_at": 1795921231.8,
    "archive_expires_at": 1796004031.8,
    "download_url": DOWNLOAD_URL,
    "name": "Q3 board minutes",
    # Asked for 3 files; one was deleted from the catalogue before it could be read.
    "skipped_file_ids": [10004],
    "skipped": [{"file_id": 10004, "name": "invoices-q3.zip", "reason": "not_found"}],
    # A job started with a callback_url: its webhook, delivered on the second attempt.
    "callback_url": "https://hooks.example.com/…?token=…",
    "webhook_deliveries": [
        {
            "webhook_id": f"msg_{JOB_ID}_completed",
            "event": "completed",
            "url": "https://hooks.example.com/…?token=…",
            "state": "delivered",
            "attempts": 2,
            "created_at": 1795917631.8,
            "last_attempt_at": 1795917632.9,
            "last_status_code": 204,
            "last_error": None,
            "next_attempt_at": None,
            "delivered_at": 1795917632.9,
        }
    ],
}
FAILED = PROCESSING | {
    "status": "failed",
    "attempt": 4,
    "error": "S3 unavailable: connection refused",
    "last_error": "S3 unavailable: connection refused",
    "finished_at": 1795917640.2,
}
CANCELLED = PROCESSING | {"status": "cancelled", "finished_at": 1795917629.0}


def _examples(*pairs: tuple[str, Any]) -> list[Example]:
    return [Example(summary=name, value=value) for name, value in pairs]


def status_response(description: str, *states: str) -> ResponseSpec:
    """A JobStatus answer, with an example of the job in each of `states`."""
    known = {
        "queued": QUEUED,
        "processing": PROCESSING,
        "retrying": RETRYING,
        "ready": READY,
        "failed": FAILED,
        "cancelled": CANCELLED,
    }
    return ResponseSpec(
        JobStatus,
        description=description,
        generate_examples=False,
        examples=_examples(*((state, known[state]) for state in states)),
    )


_ERROR_EXAMPLES: dict[int, tuple[str, Any]] = {
    400: ("file_ids: duplicate ids [10001]", [{"key": "file_ids", "message": "duplicate ids"}]),
    401: ("Authorization: invalid bearer token (Signature has expired)", None),
    404: (f"no job with id '{JOB_ID}'", None),
    409: (f"job {JOB_ID} is already ready", {"status": "ready"}),
    413: ("request body is too large", None),
    415: ("Content-Type must be application/json, got 'text/plain'", None),
    422: ("Idempotency-Key 'k-1' was already used with a different request body", None),
    429: ("rate limit exceeded: 600 requests per minute; retry in 12 s", None),
    503: ("the job store (Redis) is unavailable; try again shortly", None),
}


def error_response(
    status_code: int, description: str, example: tuple[str, Any] | None = None
) -> ResponseSpec:
    """An ErrorBody answer with an example of the sentence it carries: `example` as
    (detail, extra), or the usual one of the status code."""
    detail, extra = example or _ERROR_EXAMPLES[status_code]
    body: dict[str, Any] = {"status_code": status_code, "detail": detail}
    if extra is not None:
        body["extra"] = extra
    return ResponseSpec(
        ErrorBody,
        description=description,
        generate_examples=False,
        examples=_examples((f"error {status_code}", body)),
    )


def _inlined(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inlined(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {key: _inlined(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inlined(item, defs) for item in node]
    return node


def _event_data_schema() -> dict[str, Any]:
    """The events' data schemas, inlined: `contentSchema` is read on its own. anyOf, not
    oneOf: a `retrying` event's data also fits `ProgressEvent`; the event name tells them apart."""
    kinds = list(dict.fromkeys(JOB_EVENTS.values()))
    schemas, defs = msgspec.json.schema_components(kinds)
    return {"anyOf": [_inlined(schema, defs) for schema in schemas]}


# A dataclass, not a Struct: it is only documented, never decoded. As OpenAPI 3.2 (and
# Schemathesis) read an event stream's schema: one object per event, `data` a JSON string.
@dataclass
class EventFrame:
    """One event of the stream: `id:`, `event:` and `data:` lines; `data` is JSON.

    The stream opens with a comment and `retry: 2000`, sends `: ping` comments while idle,
    and closes after a terminal event (`completed`, `failed`, `cancelled`, `expired`).
    """

    id: Annotated[
        str, KwargDefinition(description="Redis stream id; send it back as Last-Event-ID")
    ]
    # The names from JobEventName itself, so the documented list cannot fall behind it.
    event: Annotated[
        str, KwargDefinition(schema_extra={"enum": [name.value for name in JobEventName]})
    ]
    data: Annotated[
        str,
        KwargDefinition(
            schema_extra={
                "contentMediaType": "application/json",
                "contentSchema": _event_data_schema(),
            }
        ),
    ]


def _frame(event_id: str, event: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n"


_PROGRESS = {k: PROCESSING[k] for k in ProgressEvent.__struct_fields__}
_STREAM_OPEN = ": stream open\nretry: 2000\n\n"
_SUCCESS_STREAM = (
    _STREAM_OPEN
    + _frame("1795917627124-0", "progress", {k: QUEUED[k] for k in _PROGRESS})
    + _frame("1795917629391-0", "progress", _PROGRESS)
    + ": ping\n\n"
    + _frame(
        "1795917631802-0",
        "completed",
        {
            "download_url": DOWNLOAD_URL,
            "archive_size": 9437512,
            "total_files": 2,
            "skipped_file_ids": [10004],
            "skipped": [{"file_id": 10004, "name": "invoices-q3.zip", "reason": "not_found"}],
        },
    )
)
_RETRY_STREAM = (
    _STREAM_OPEN
    + _frame(
        "1795917628010-0",
        "retrying",
        _PROGRESS | {"error": "S3 unavailable: connection refused", "retry_in": 1.0},
    )
    + _frame(
        "1795917640200-0", "failed", {"error": "S3 unavailable: connection refused", "attempt": 4}
    )
)
_CANCEL_STREAM = _STREAM_OPEN + _frame("1795917629000-0", "cancelled", {"status": "cancelled"})

EVENTS_TABLE = "\n".join(
    f"| `{name}` | `{schema.__name__}` | {(schema.__doc__ or '').split('`: ', 1)[-1].strip()} |"
    for name, schema in JOB_EVENTS.items()
)
EVENT_STREAM = ResponseSpec(
    EventFrame,
    media_type="text/event-stream",
    generate_examples=False,
    description="`text/event-stream`; each event's `data:` is JSON:\n\n"
    "| event | data | meaning |\n| --- | --- | --- |\n" + EVENTS_TABLE,
    examples=_examples(
        ("progress then completed", _SUCCESS_STREAM),
        ("retried, then failed", _RETRY_STREAM),
        ("cancelled", _CANCEL_STREAM),
    ),
)

STREAM_ENDED = ResponseSpec(
    None,
    description="No Content: the job has ended and nothing follows `Last-Event-ID`. The HTML "
    "standard's signal for EventSource to stop reconnecting; no stream slot is taken.",
)

CURSOR_EXAMPLE = "WzcsMTAwLCIzMjVlOWY2YTU5OWMyMmZmIl0"
FILES = ResponseSpec(
    CataloguePage,
    description="A page of the files a job can ask for: `file_id`, `name` in the archive, "
    "`size` in bytes; `total` files match the query. Headers: `ETag` (weak), "
    '`Cache-Control: no-cache`, and `Link: <…>; rel="next"` unless this is the last page.',
    generate_examples=False,
    examples=_examples(
        (
            "first page",
            {
                "items": [
                    {"file_id": 10001, "name": "annual-report-2025.pdf", "size": 6291456},
                    {"file_id": 10003, "name": "customer-export.csv", "size": 3145728},
                ],
                "total": 12,
                "next_cursor": CURSOR_EXAMPLE,
            },
        ),
        (
            "last page of a search",
            {
                "items": [{"file_id": 10008, "name": "brand-guidelines.pdf", "size": 2097152}],
                "total": 3,
                "next_cursor": None,
            },
        ),
    ),
)
FILES_NOT_MODIFIED = ResponseSpec(
    None,
    description="Not Modified: `If-None-Match` names this page's current `ETag` (RFC 9110 "
    "§15.4.5); no body.",
)
FILES_400 = ("limit: must be 1 to 500", [{"key": "limit", "message": "must be 1 to 500"}])
HEALTHY = ResponseSpec(
    HealthBody,
    description="Every dependency answers.",
    generate_examples=False,
    examples=_examples(
        ("healthy", {"status": "healthy", "checks": {"api": "ok", "redis": "ok", "storage": "ok"}})
    ),
)
UNHEALTHY = ResponseSpec(
    HealthBody,
    description="A dependency is down; `checks` says which.",
    generate_examples=False,
    examples=_examples(
        (
            "storage down",
            {"status": "unhealthy", "checks": {"api": "ok", "redis": "ok", "storage": "error"}},
        )
    ),
)


RETRY_ID = "9a1c4e7f2b8d4c0e9f3a5b7c1d2e4f60"
RETRY: dict[str, Any] = QUEUED | {
    "job_id": RETRY_ID,
    "status_url": f"/v1/download/status/{RETRY_ID}",
    "events_url": f"/v1/download/subscribe/{RETRY_ID}",
    "created_at": 1795917700.4,
    "retry_of": JOB_ID,
}
RETRIED = ResponseSpec(
    JobStatus,
    description="The new job, queued, with `retry_of` naming the job it tries again; "
    "`Location` is its status URL.",
    generate_examples=False,
    examples=_examples(("retry of a failed job", RETRY)),
)
_CURSOR = "WzE3OTU5MTc2MjcuMSwiM2YyYjhjMWU5ZDdhNGI2YzhlMGYxYTJiM2M0ZDVlNmYiXQ"
JOB_PAGE = ResponseSpec(
    JobPage,
    description="The caller's jobs, newest first, each in the shape of the status route. "
    "`next_cursor` (null on the last page) fetches the next page, as does the `Link: <…>; "
    'rel="next"` header (RFC 8288).',
    generate_examples=False,
    examples=_examples(
        ("first page", {"jobs": [RETRY, FAILED], "next_cursor": _CURSOR}),
        ("ready jobs only, last page", {"jobs": [READY], "next_cursor": None}),
        ("no jobs", {"jobs": [], "next_cursor": None}),
    ),
)
_NOT_A_STATUS = (
    "'done' is not a job status; one of queued, processing, ready, failed, cancelled, expired"
)
LIST_BAD_INPUT = (f"status: {_NOT_A_STATUS}", [{"key": "status", "message": _NOT_A_STATUS}])
LIST_NEEDS_TOKEN = (
    "Authorization: listing jobs needs a bearer token (or the page's cookie); callers without "
    "one share a single owner, whose jobs are not listed",
    None,
)
NOT_RETRYABLE = (
    f"job {JOB_ID} is processing; only failed, cancelled or expired jobs can be tried again",
    {"status": "processing"},
)
