"""Download jobs as the API and the pages use them: start, read, cancel, stream.

Framework-free: callers turn the errors raised here into HTTP responses (api/errors.py).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator
from typing import NamedTuple

import msgspec

from backend import queue, tracing
from backend.archivenames import filename_of, name_problem
from backend.events import EventHub
from backend.jobevents import JobEventName, ended_event, is_terminal_event
from backend.jobs import (
    ActiveJobsLimit,
    AlreadyQueued,
    IdempotencyBound,
    IdempotencyClaim,
    parse_event_id,
)
from backend.metrics.api import job_submitted
from backend.models import JobEvent, JobRecord, JobState, JobStatus, OnMissing, status_of
from backend.owners import PUBLIC_OWNER, may_read
from backend.queueplaces import queue_position
from backend.services import Services
from backend.webhooks.callbacks import check_callback_url
from backend.webhooks.outbox import Outbox
from backend.webhooks.records import public_view

_JOB_ID_LENGTH = 32


class InvalidInput(Exception):
    """A request that breaks a rule; `field` names the part of the request that is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnknownJob(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class JobAlreadyFinished(Exception):
    def __init__(self, record: JobRecord) -> None:
        super().__init__(f"job {record.job_id} is already {record.status.value}")
        self.record = record


class IdempotencyConflict(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key[:64]!r} was already used with a different request body"
        )


class EnqueueFailed(Exception):
    """The job record was written but the queue refused the job."""


def check_file_ids(file_ids: list[int], max_files: int) -> None:
    """Rules msgspec cannot express: the per-job maximum and no duplicates."""
    if len(file_ids) > max_files:
        raise InvalidInput("file_ids", f"at most {max_files} ids per job, got {len(file_ids)}")
    duplicates = sorted(f for f, n in Counter(file_ids).items() if n > 1)
    if duplicates:
        raise InvalidInput("file_ids", f"duplicate ids {duplicates}")


def is_job_id(value: str) -> bool:
    return len(value) == _JOB_ID_LENGTH and all(c in "0123456789abcdef" for c in value)


async def start_job(
    services: Services,
    file_ids: list[int],
    owner: str,
    idempotency_key: str | None = None,
    client: str | None = None,
    callback_url: str | None = None,
    retry_of: str | None = None,
    on_missing: OnMissing = "skip",
    name: str | None = None,
) -> JobRecord:
    """Record a new job and queue it: one Redis round trip, no S3 call.

    The job store's create script checks and binds the Idempotency-Key, checks and takes the
    client's place among its active jobs, writes the record and its first event, and queues
    the job for arq, all in one atomic step (jobs.py). With an idempotency key, a repeat of
    the same request returns the job the first one made, even at the cap; the same key with
    another body is refused (IdempotencyConflict). A `client` may have at most
    MAX_ACTIVE_JOBS_PER_CLIENT jobs queued or running, however many requests race
    (ActiveJobsLimit past it).
    A `callback_url` gets the job's terminal events as signed webhooks (InvalidInput naming
    it when the server has no signing secret or the SSRF guard refuses it).
    `retry_of` names the ended job this one tries again (see retries.py); `on_missing` says
    what a file that is gone does to the job (`skip` it, or `fail`). `name` names the saved
    archive (archivenames.py; InvalidInput naming it when it breaks a rule there).
    """
    check_file_ids(file_ids, services.settings.max_files_per_job)
    if name is not None and (problem := name_problem(name)) is not None:
        raise InvalidInput("name", problem)
    if callback_url is not None:
        try:
            await check_callback_url(services.settings, callback_url)
        except ValueError as exc:
            raise InvalidInput("callback_url", str(exc)) from exc
    job_id = uuid.uuid4().hex
    claim = None
    if idempotency_key is not None:
        check_idempotency_key(idempotency_key)
        # A retry's key names the job it retries too, and a non-default on_missing is part
        # of the request (the default leaves the fingerprint as it was before the option).
        asked = list(file_ids) if on_missing == "skip" else (list(file_ids), on_missing)
        request = (
            repr(asked)
            + (f" {callback_url}" if callback_url else "")
            + ("" if retry_of is None else f" retry_of={retry_of}")
            + ("" if name is None else f" name={name!r}")
        )
        fingerprint = hashlib.sha256(request.encode()).hexdigest()[:32]
        claim = IdempotencyClaim(idempotency_scope(owner, client), idempotency_key, fingerprint)
    record = JobRecord(
        job_id=job_id,
        owner=owner,
        client=client or "",
        file_ids=list(file_ids),
        on_missing=on_missing,
        total_files=len(file_ids),
        max_attempts=services.settings.max_attempts,
        created_at=time.time(),
        # The worker continues this request's trace in every attempt.
        trace_context=tracing.inject(),
        callback_url=callback_url,
        retry_of=retry_of,
        name=name,
    )
    limit = services.settings.max_active_jobs_per_client
    try:
        await services.store.create(
            record,
            active_limit=None if client is None else limit,
            idempotency=claim,
            queue_entry=queue.queue_entry(services.settings, job_id),
        )
    except ActiveJobsLimit:
        job_submitted("refused")
        raise
    except IdempotencyBound as bound:
        if claim is None or bound.fingerprint != claim.fingerprint:
            raise IdempotencyConflict(idempotency_key or "") from None
        replayed = await services.store.get(bound.job_id)
        if replayed is None:
            # A key lives a day and its job's record a week: only a record deleted by hand is
            # gone, and there is nothing left to replay.
            raise UnknownJob(bound.job_id) from None
        job_submitted("replayed")
        return replayed
    except AlreadyQueued:
        raise EnqueueFailed(f"job {job_id} is already queued") from None
    job_submitted("accepted")
    return record


def idempotency_scope(owner: str, client: str | None) -> str:
    """Whose Idempotency-Keys a request shares: its owner's, except for the `public` owner.

    Every anonymous caller is `public`, so there one caller's key would replay (or refuse)
    another's request; anonymous keys belong to the calling client (its address) instead.
    """
    if owner == PUBLIC_OWNER and client is not None:
        return f"{PUBLIC_OWNER}:{client}"
    return owner


def check_idempotency_key(key: str) -> None:
    if not 1 <= len(key) <= 255 or not all(33 <= ord(ch) < 127 for ch in key):
        raise InvalidInput(
            "Idempotency-Key", "must be 1 to 255 visible ASCII characters (e.g. a UUID)"
        )


async def find_job(services: Services, job_id: str, requester: str) -> JobRecord:
    """The record of `job_id` if `requester` may see it; UnknownJob otherwise."""
    if not is_job_id(job_id):
        raise UnknownJob(job_id)
    record = await services.store.get(job_id)
    if record is None or not may_read(record.owner, requester):
        raise UnknownJob(job_id)
    return record


async def public_status(
    services: Services, record: JobRecord, *, with_queue_position: bool = True
) -> JobStatus:
    """The JobStatus of a record, with a freshly presigned download URL when ready, and a
    queued job's place in the queue unless `with_queue_position` is false (the answer to a
    POST: finding the place costs Redis round trips a POST should not wait for)."""
    if record.status is JobState.READY and record.archive_key:
        url = await download_url(services, record)
        status = status_of(record, url, time.time() + services.settings.presign_ttl_seconds)
    else:
        status = status_of(record)
        if with_queue_position:
            status.queue_position = await queue_position(services, record)
    if record.callback_url:
        deliveries = await Outbox(services.redis, services.settings.key_prefix).of_job(
            record.job_id
        )
        status.webhook_deliveries = [public_view(delivery) for delivery in deliveries]
    return status


async def download_url(services: Services, record: JobRecord) -> str:
    if not record.archive_key:
        raise JobAlreadyFinished(record)
    return await services.storage.presign_download(
        record.archive_key, await filename_of(services, record)
    )


async def cancel_job(services: Services, record: JobRecord) -> JobRecord:
    """Move a queued or running job to `cancelled` and tell its worker to stop."""
    if record.status.is_terminal:
        raise JobAlreadyFinished(record)
    record.status = JobState.CANCELLED
    record.finished_at = time.time()
    saved = await services.store.save(record, ended_event(record))
    if saved is None:
        current = await services.store.get(record.job_id)
        raise JobAlreadyFinished(current or record)
    # The worker cancels the task, and the archive code aborts the multipart upload on the
    # way out.
    await queue.request_abort(services.redis, record.job_id)
    return record


class Resume(NamedTuple):
    """Where a subscriber's stream starts."""

    # Send the events after this id; None: from the first.
    after: str | None
    # The job has ended and nothing follows `after`: there is nothing left to send.
    ended: bool


async def resume_point(services: Services, job_id: str, last_event_id: str | None) -> Resume:
    """Where a stream that resumes after `last_event_id` (a well-formed stream id) starts.

    - none, or an id earlier than the job's first event: from the first event;
    - an id the job issued, or one between two of its events: after it;
    - the id of the job's terminal event (and nothing after it): `ended`;
    - an id later than the job's last event, which no subscriber of it can have seen:
      InvalidInput naming Last-Event-ID.
    """
    bounds = await services.store.first_and_last_events(job_id)
    position = parse_event_id(last_event_id) if last_event_id else None
    if bounds is None or position is None:
        return Resume(None, False)
    first, last = bounds
    last_position = parse_event_id(last.id) or (0, 0)
    if position > last_position:
        raise InvalidInput(
            "Last-Event-ID",
            f"{last_event_id!r} is later than this job's last event ({last.id}); "
            "reconnect without it to read the job from its first event",
        )
    if position < (parse_event_id(first.id) or (0, 0)):
        return Resume(None, False)
    return Resume(last_event_id, position == last_position and is_terminal_event(last.event))


async def job_events(
    hub: EventHub, services: Services, record: JobRecord, last_event_id: str | None
) -> AsyncGenerator[JobEvent | None, None]:
    """The job's events after `last_event_id`; `completed` carries a freshly minted URL.

    None marks an idle interval (time for a keep-alive).
    """
    async for event in hub.subscribe(
        record.job_id, last_event_id, idle_seconds=services.settings.sse_ping_seconds
    ):
        if event is not None and event.event == JobEventName.COMPLETED:
            current = await services.store.get(record.job_id) or record
            # Patched as JSON rather than decoded into CompletedEvent: events stored before
            # the store wrote `download_url` (as null) lack the field, and only it changes here.
            data = msgspec.json.decode(event.data)
            if current.status is JobState.EXPIRED:
                data["download_url"] = None  # the archive is gone; an `expired` event follows
            else:
                data["download_url"] = await download_url(services, current)
            event = JobEvent(
                id=event.id, event=event.event, data=msgspec.json.encode(data).decode()
            )
        yield event
