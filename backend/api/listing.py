"""JSON API over a caller's jobs as a whole: list them, and try an ended one again."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, Response, get, post
from litestar.exceptions import NotAuthorizedException
from litestar.params import Parameter

from backend.api.openapi_docs import (
    JOB_PAGE,
    LIST_BAD_INPUT,
    LIST_NEEDS_TOKEN,
    NOT_RETRYABLE,
    RETRIED,
    error_response,
)
from backend.downloads import find_job, public_status
from backend.listing import (
    MAX_LIMIT,
    check_limit,
    decode_cursor,
    encode_cursor,
    list_jobs,
    parse_statuses,
)
from backend.models import JobPage, JobStatus
from backend.owners import PUBLIC_OWNER
from backend.retries import retry_job
from backend.services import Services

LIST_PATH = "/v1/downloads"

_COMMON = {
    429: error_response(429, "Rate limit or per-client cap; see Retry-After."),
    503: error_response(503, "Redis or S3 is unavailable; retry shortly."),
}


@get(
    LIST_PATH,
    summary="List your jobs",
    tags=["downloads"],
    responses={
        200: JOB_PAGE,
        400: error_response(
            400, "`status`, `limit` or `cursor` is wrong; `detail` names it.", LIST_BAD_INPUT
        ),
        401: error_response(401, "No usable bearer token.", LIST_NEEDS_TOKEN),
        **_COMMON,
    },
    description="The caller's jobs, newest first, each in the shape of "
    "`GET /v1/download/status/{job_id}`, for JOB_RECORD_TTL_SECONDS after each was created. "
    "Needs a bearer token "
    "(or the page's owner cookie): callers without one all share the `public` owner, so "
    "listing its jobs would show every anonymous caller's. Pages are cut by an opaque cursor "
    "that names the page's last job, so jobs created meanwhile neither shift nor repeat them.",
)
async def list_downloads(
    request: Request[Any, Any, Any],
    services: Services,
    requester: str,
    status: Annotated[
        list[str] | None,
        Parameter(
            query="status",
            required=False,
            description="Only jobs in these states: repeat it (`status=failed&status=cancelled`) "
            "or separate them with commas.",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        Parameter(
            query="limit",
            required=False,
            description=f"Jobs per page, 1 to {MAX_LIMIT} (default 20).",
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Parameter(
            query="cursor",
            required=False,
            description="`next_cursor` of the previous page, as it was given.",
        ),
    ] = None,
) -> Response[JobPage]:
    if requester == PUBLIC_OWNER:
        raise NotAuthorizedException(
            detail=LIST_NEEDS_TOKEN[0], headers={"WWW-Authenticate": "Bearer"}
        )
    statuses = parse_statuses(status)
    page_size = check_limit(limit)
    after = None if cursor is None else decode_cursor(cursor)
    page = await list_jobs(services.store, requester, page_size, statuses, after)
    jobs = [await public_status(services, record) for record in page.records]
    next_cursor = None if page.next_cursor is None else encode_cursor(page.next_cursor)
    headers = {}
    if next_cursor is not None:
        query: list[tuple[str, str]] = [("limit", str(page_size))]
        query += [("status", state.value) for state in sorted(statuses or ())]
        query.append(("cursor", next_cursor))
        headers["Link"] = f'<{LIST_PATH}?{urlencode(query)}>; rel="next"'
    return Response(JobPage(jobs=jobs, next_cursor=next_cursor), headers=headers)


@post(
    "/v1/download/{job_id:str}/retry",
    status_code=202,
    summary="Try an ended job again",
    tags=["downloads"],
    responses={
        202: RETRIED,
        400: error_response(400, "A bad Idempotency-Key; `detail` names it."),
        401: error_response(401, "Bad or missing bearer token."),
        404: error_response(404, "No such job (or not yours)."),
        409: error_response(409, "The job is queued, running or ready.", NOT_RETRYABLE),
        422: error_response(422, "Idempotency-Key reused for another request."),
        **_COMMON,
    },
    description="A new job with the same files as a `failed`, `cancelled` or `expired` one "
    "(an expired job's archive was deleted; this builds it anew). The new job's `retry_of` "
    "names the old one, which is left as it ended. An Idempotency-Key works as on "
    "`POST /v1/download/async`: repeating the request gives the same new job.",
)
async def retry_download(
    job_id: str,
    services: Services,
    requester: str,
    client: str,
    idempotency_key: Annotated[
        str | None,
        Parameter(
            header="Idempotency-Key",
            required=False,
            description="Repeat the retry with the same key to get the same new job back.",
        ),
    ] = None,
) -> Response[JobStatus]:
    record = await find_job(services, job_id, requester)
    retried = await retry_job(services, record, requester, idempotency_key, client)
    status = await public_status(services, retried)
    return Response(status, status_code=202, headers={"Location": status.status_url})
