"""What the OpenAPI schema says about webhooks: the request Longhaul sends to a job's
`callback_url` (OpenAPI 3.1's top-level `webhooks`), and examples of a refused callback.

Only documentation lives here; app.py and the download controller refer to it.
"""

from __future__ import annotations

from typing import Any

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Example,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
)

from backend.api.openapi_docs import DOWNLOAD_URL, JOB_ID
from backend.models import ErrorBody

_STRING = Schema(type=OpenAPIType.STRING)
_INTEGER = Schema(type=OpenAPIType.INTEGER)

_DATA = Schema(
    type=OpenAPIType.OBJECT,
    required=["job_id", "status", "status_url"],
    description="The event's data as the job's event stream carries it, plus `job_id`, "
    "`status` and `status_url`.",
    properties={
        "job_id": _STRING,
        "status": Schema(type=OpenAPIType.STRING, enum=["ready", "failed", "cancelled", "expired"]),
        "status_url": _STRING,
        "download_url": Schema(
            one_of=[_STRING, Schema(type=OpenAPIType.NULL)],
            description="`job.completed`: presigned when this attempt was sent (valid "
            "PRESIGN_TTL_SECONDS); null once the archive has expired.",
        ),
        "archive_size": Schema(type=OpenAPIType.INTEGER, description="`job.completed`: bytes"),
        "total_files": _INTEGER,
        "skipped_file_ids": Schema(type=OpenAPIType.ARRAY, items=_INTEGER),
        "error": Schema(type=OpenAPIType.STRING, description="`job.failed`: why"),
        "attempt": Schema(type=OpenAPIType.INTEGER, description="`job.failed`: the last one"),
    },
)
_MESSAGE = Schema(
    type=OpenAPIType.OBJECT,
    required=["type", "timestamp", "data"],
    description="The Standard Webhooks payload structure.",
    properties={
        "type": Schema(
            type=OpenAPIType.STRING,
            enum=["job.completed", "job.failed", "job.cancelled", "job.expired"],
        ),
        "timestamp": Schema(
            type=OpenAPIType.STRING, format=None, description="When the event happened (ISO 8601)"
        ),
        "data": _DATA,
    },
)

COMPLETED_MESSAGE: dict[str, Any] = {
    "type": "job.completed",
    "timestamp": "2026-11-29T12:00:31.802000+00:00",
    "data": {
        "job_id": JOB_ID,
        "status": "ready",
        "status_url": f"/v1/download/status/{JOB_ID}",
        "download_url": DOWNLOAD_URL,
        "archive_size": 9437512,
        "total_files": 2,
        "skipped_file_ids": [],
    },
}
FAILED_MESSAGE: dict[str, Any] = {
    "type": "job.failed",
    "timestamp": "2026-11-29T12:00:40.200000+00:00",
    "data": {
        "job_id": JOB_ID,
        "status": "failed",
        "status_url": f"/v1/download/status/{JOB_ID}",
        "error": "S3 unavailable: connection refused",
        "attempt": 4,
    },
}
CANCELLED_MESSAGE: dict[str, Any] = {
    "type": "job.cancelled",
    "timestamp": "2026-11-29T12:00:29.000000+00:00",
    "data": {
        "job_id": JOB_ID,
        "status": "cancelled",
        "status_url": f"/v1/download/status/{JOB_ID}",
    },
}


def _header(name: str, description: str, example: str) -> Parameter:
    return Parameter(
        name=name,
        param_in="header",
        required=True,
        schema=_STRING,
        description=description,
        example=example,
    )


JOB_ENDED_WEBHOOK = PathItem(
    post=Operation(
        summary="A job ended (sent to the job's callback_url)",
        description="Longhaul POSTs each terminal event of a job that was started with a "
        "`callback_url`: `job.completed` (with a freshly presigned `download_url`), "
        "`job.failed`, `job.cancelled`, and `job.expired` (a ready job's archive was deleted "
        "after ARCHIVE_TTL_SECONDS). Signed per the Standard Webhooks spec with WEBHOOK_SECRET; "
        "verify with any Standard Webhooks library. Answer 2xx once stored; `410 Gone` stops "
        "the deliveries; anything else (or no answer within WEBHOOK_TIMEOUT_SECONDS) is retried "
        "after 1 s, 2 s, 4 s, … for WEBHOOK_RETRY_FOR_SECONDS, with the same `webhook-id`. "
        "Redirects are not followed. The job's status lists each delivery and its outcome.",
        parameters=[
            _header(
                "webhook-id",
                "The message id, the same on every retry: drop ones already processed.",
                f"msg_{JOB_ID}_completed",
            ),
            _header(
                "webhook-timestamp",
                "Seconds since the epoch when this attempt was signed; refuse ones more than "
                "5 minutes off (replays).",
                "1795917631",
            ),
            _header(
                "webhook-signature",
                "`v1,` + base64 HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<body>` keyed "
                "with the base64-decoded part of WEBHOOK_SECRET after `whsec_`.",
                "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
            ),
        ],
        request_body=RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(
                    schema=_MESSAGE,
                    examples={
                        "completed": Example(value=COMPLETED_MESSAGE),
                        "failed": Example(value=FAILED_MESSAGE),
                        "cancelled": Example(value=CANCELLED_MESSAGE),
                    },
                )
            },
        ),
        responses={
            "204": OpenAPIResponse(description="Any 2xx: delivered."),
            "410": OpenAPIResponse(description="Gone: no more deliveries to this URL."),
        },
    )
)

WEBHOOKS: dict[str, PathItem | Reference] = {"jobEnded": JOB_ENDED_WEBHOOK}


def _error(detail: str, key: str, message: str) -> dict[str, Any]:
    return {"status_code": 400, "detail": detail, "extra": [{"key": key, "message": message}]}


START_REFUSED = ResponseSpec(
    ErrorBody,
    description="The request breaks a rule; `detail` names the field (`file_ids`, "
    "`callback_url`, `Idempotency-Key`, `body`).",
    generate_examples=False,
    examples=[
        Example(
            summary="error 400",
            value=_error("file_ids: duplicate ids [10001]", "file_ids", "duplicate ids [10001]"),
        ),
        Example(
            summary="callback_url refused (SSRF guard)",
            value=_error(
                "callback_url: address 169.254.169.254 is a link-local address (where cloud "
                "metadata services live); callbacks go to public addresses only (an operator "
                "can allow it in WEBHOOK_ALLOWED_HOSTS)",
                "callback_url",
                "address 169.254.169.254 is a link-local address",
            ),
        ),
        Example(
            summary="callback_url without a signing secret",
            value=_error(
                "callback_url: webhooks are off on this server (WEBHOOK_SECRET is not set)",
                "callback_url",
                "webhooks are off on this server (WEBHOOK_SECRET is not set)",
            ),
        ),
    ],
)
