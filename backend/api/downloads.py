"""JSON API for download jobs: start, status, subscribe (SSE), cancel."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from litestar.response import ServerSentEventMessage
from litestar.types import ASGIApp

from backend.api.openapi_docs import EVENT_STREAM, STREAM_ENDED, error_response, status_response
from backend.api.sse import Frame, event_stream, nothing_to_stream
from backend.api.webhook_docs import START_REFUSED
from backend.downloads import (
    InvalidInput,
    cancel_job,
    find_job,
    job_events,
    public_status,
    resume_point,
    start_job,
)
from backend.events import EventHub
from backend.jobs import parse_event_id
from backend.models import DownloadRequest, JobEvent, JobStatus
from backend.services import Services

_ERRORS = {
    400: error_response(400, "The request breaks a rule; `detail` names it."),
    404: error_response(404, "No such job (or not yours)."),
    503: error_response(503, "Redis or S3 is unavailable; retry shortly."),
    401: error_response(401, "Bad or missing bearer token."),
    429: error_response(429, "Rate limit or per-client cap; see Retry-After."),
}


_strict_decoder = msgspec.json.Decoder(DownloadRequest, strict=True)


def decode_strictly(body: bytes) -> DownloadRequest:
    """The request body as a DownloadRequest, refusing strings that merely look like ids."""
    try:
        return _strict_decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$.")
        field = path.rstrip("`") or "body"
        raise InvalidInput(field, message) from exc
    except msgspec.DecodeError as exc:
        raise InvalidInput("body", f"JSON is malformed: {exc}") from exc


def _as_sent(header: str) -> str:
    # ASGI hands header bytes over as Latin-1; a client that sent UTF-8 should see its own text.
    try:
        return header.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return header


def read_last_event_id(header: str | None, query: str | None) -> str | None:
    """The resume point from the Last-Event-ID header (or `last_event_id`); 400 if malformed."""
    # An empty header says nothing; the query parameter (for clients that cannot set
    # headers) may still say something.
    value = header if header is not None and header.strip() else query
    if value is None or value.strip() == "":
        return None
    if parse_event_id(value) is None:
        raise HTTPException(
            status_code=400,
            detail=f"Last-Event-ID: {_as_sent(value)[:64]!r} is not an event id "
            "(expected <milliseconds>-<sequence>)",
        )
    return value.strip()


async def job_frames(events: AsyncGenerator[JobEvent | None, None]) -> AsyncGenerator[Frame, None]:
    """SSE frames of job events: each with its `id`, so a reconnect resumes after it."""
    try:
        async for event in events:
            yield (
                None
                if event is None
                else ServerSentEventMessage(id=event.id, event=event.event, data=event.data)
            )
    finally:
        # Unregisters the subscriber from the hub now, not whenever the generator is collected.
        await events.aclose()


class DownloadController(Controller):
    path = "/v1/download"
    tags = ["downloads"]

    @post(
        "/async",
        status_code=202,
        summary="Start a download job",
        responses={
            **_ERRORS,
            400: START_REFUSED,
            202: status_response("The job, queued; `Location` is its status URL.", "queued"),
            415: error_response(415, "Not JSON."),
            422: error_response(422, "Idempotency-Key reused with a different body."),
            413: error_response(413, "Body too large."),
        },
        description="Answers at once with the job's status; a worker builds the ZIP. "
        "Follow it at `status_url` (polling) or `events_url` (SSE). With `callback_url`, the "
        "job's terminal event is also POSTed there, signed (see the `jobEnded` webhook). The "
        "same files at the same versions with the same `on_missing` share one archive, so a "
        "repeat is ready at once (its own job, events and link). `on_missing`: `skip` "
        "(default) leaves out files that are gone and lists them in `skipped`; `fail` fails "
        "the job naming them; anything else is a 400 naming `on_missing`. An optional `name` "
        "names the saved archive (`Q3 board minutes` saves as `Q3 board minutes.zip`); one "
        "with `/`, `\\` or control characters, or over 100 characters, is a 400 naming `name`.",
    )
    async def start(
        self,
        data: DownloadRequest,
        request: Request[Any, Any, Any],
        services: Services,
        requester: str,
        client: str,
        idempotency_key: Annotated[
            str | None,
            Parameter(
                header="Idempotency-Key",
                required=False,
                description="Repeat a POST with the same key to get the same job back.",
            ),
        ] = None,
    ) -> Response[JobStatus]:
        # Litestar decodes leniently ("2" would pass as 2); the contract is strict JSON types.
        data = decode_strictly(await request.body())
        record = await start_job(
            services,
            data.file_ids,
            requester,
            idempotency_key,
            client,
            data.callback_url,
            on_missing=data.on_missing,
            name=data.name,
        )
        # One Redis round trip for the job, none more for the answer: its place in the queue
        # is in its status.
        status = await public_status(services, record, with_queue_position=False)
        return Response(status, status_code=202, headers={"Location": status.status_url})

    @get(
        "/status/{job_id:str}",
        summary="A job's status",
        responses={
            **_ERRORS,
            200: status_response(
                "The job now; `download_url` (presigned, fresh on every call) once ready.",
                "queued",
                "processing",
                "retrying",
                "ready",
                "failed",
                "cancelled",
            ),
        },
    )
    async def status(self, job_id: str, services: Services, requester: str) -> JobStatus:
        record = await find_job(services, job_id, requester)
        return await public_status(services, record)

    @get(
        "/subscribe/{job_id:str}",
        summary="Stream a job's events (SSE)",
        media_type="text/event-stream",
        responses={**_ERRORS, 200: EVENT_STREAM, 204: STREAM_ENDED},
        description="`text/event-stream` of `progress`, `retrying`, `stalled`, `completed "
        "{download_url}`, `failed {error}`, `cancelled` and `expired`; data is JSON. Each "
        "event has an `id`; reconnect with `Last-Event-ID` to resume after it. The stream "
        "closes after the terminal event; `: ping` comments keep it alive. Resuming: an id "
        "earlier than the job's first event replays from the start; one between two events "
        "resumes after it; the job's terminal event id, with nothing after it, is `204` (an "
        "EventSource stops reconnecting); an id later than the job's last event is `400`.",
    )
    async def subscribe(
        self,
        job_id: str,
        request: Request[Any, Any, Any],
        services: Services,
        hub: EventHub,
        requester: str,
        client: str,
        last_event_header: Annotated[
            str | None, Parameter(header="Last-Event-ID", required=False)
        ] = None,
        last_event_id: Annotated[
            str | None, Parameter(query="last_event_id", required=False)
        ] = None,
    ) -> ASGIApp:
        """The job's events after Last-Event-ID (see `resume_point` for every kind of id)."""
        after = read_last_event_id(last_event_header, last_event_id)
        record = await find_job(services, job_id, requester)
        resume = await resume_point(services, record.job_id, after)
        if resume.ended:
            return nothing_to_stream(request)
        events = job_events(hub, services, record, resume.after)
        return await event_stream(request, services, client, job_frames(events))

    @delete(
        "/{job_id:str}",
        status_code=200,
        summary="Cancel a job",
        responses={
            **_ERRORS,
            200: status_response("The job, now cancelled.", "cancelled"),
            409: error_response(409, "Already ended."),
        },
    )
    async def cancel(self, job_id: str, services: Services, requester: str) -> JobStatus:
        record = await find_job(services, job_id, requester)
        record = await cancel_job(services, record)
        return await public_status(services, record)
