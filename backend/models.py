"""msgspec Structs: the contract at every edge (requests, responses, job records, events)."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from backend.webhooks.records import WebhookDeliveryStatus, redacted_url

FileId = Annotated[int, Meta(gt=0, le=2**53, description="A catalogue file id (positive integer).")]


class JobState(enum.StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Was ready; the archive has since been deleted after ARCHIVE_TTL_SECONDS.
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.READY, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED})


# What a job does about a requested file it cannot include: leave it out and name it
# (`skip`), or fail naming it (`fail`).
OnMissing = Literal["skip", "fail"]


class SkipReason(enum.StrEnum):
    """Why a requested file is not in the archive."""

    # Not in the catalogue when the job looked, or deleted while the job read it.
    NOT_FOUND = "not_found"
    # Its catalogue key cannot be a file name (dots or spaces only: backend.entrynames).
    UNNAMABLE = "unnamable"


class SkippedFile(Struct, frozen=True, kw_only=True):
    """A requested file left out of the archive, and why; `name` is "" when never known."""

    file_id: int
    name: str = ""
    reason: SkipReason


class DownloadRequest(Struct, forbid_unknown_fields=True):
    """Body of POST /v1/download/async."""

    file_ids: Annotated[
        list[FileId],
        Meta(
            min_length=1,
            description="Catalogue ids of the files to put in one ZIP archive.",
            examples=[[10001, 10003]],
        ),
    ]
    callback_url: (
        Annotated[
            str,
            Meta(
                max_length=2048,
                description="http(s) URL that receives the job's terminal event (`completed`, "
                "`failed`, `cancelled`, `expired`) as a POST signed per Standard Webhooks. Its "
                "host must resolve to public addresses only (unless the operator allows it).",
                examples=["https://hooks.example.com/longhaul?token=s3cr3t"],
            ),
        ]
        | None
    ) = None
    on_missing: Annotated[
        OnMissing,
        Meta(
            description="A requested file that is gone (or cannot be named): `skip` leaves it "
            "out and names it in `skipped`; `fail` fails the job naming it.",
            examples=["skip", "fail"],
        ),
    ] = "skip"
    # Checked further by archivenames.name_problem (separators, control characters).
    name: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=100,
                description="What to call the archive when it is saved (`.zip` is added); "
                "1-100 characters, no `/`, `\\` or control characters. Without it the name "
                "comes from the files: `<first file>-and-<N>-more.zip`.",
                examples=["Q3 board minutes"],
            ),
        ]
        | None
    ) = None


class CatalogueFile(Struct, frozen=True):
    """One object of the source bucket, as the catalogue lists it."""

    file_id: int
    name: str
    size: int


class CataloguePage(Struct, kw_only=True):
    """One page of GET /v1/files: the files, how many match in all, and the next page's cursor."""

    items: list[CatalogueFile]
    total: Annotated[int, Meta(ge=0, description="Files matching the query, on every page.")]
    next_cursor: Annotated[
        str | None,
        Meta(description="Pass as `cursor` for the next page; null on the last page."),
    ] = None


class JobRecord(Struct, kw_only=True):
    """What the job store keeps for a job. Only jobs.py reads or writes it in Redis."""

    job_id: str
    owner: str
    file_ids: list[int]
    # Whose active-job quota the job counts against (auth.client_identity); "" for none.
    client: str = ""
    status: JobState = JobState.QUEUED
    progress: int = 0
    total_files: int = 0
    processed_files: int = 0
    bytes_total: int = 0
    bytes_processed: int = 0
    attempt: int = 0
    max_attempts: int = 4
    skipped_file_ids: list[int] = msgspec.field(default_factory=list)
    skipped: list[SkippedFile] = msgspec.field(default_factory=list)
    on_missing: OnMissing = "skip"
    # The archive's name as the request gave it (archivenames.py turns it into a file name).
    name: str | None = None
    # `error` and `last_error` are words for people; the raw failure (a storage server's own
    # answer, with its request ids) is `error_detail`, for logs, /ops and the API.
    error: str | None = None
    last_error: str | None = None
    error_detail: str | None = None
    # Set while an attempt has failed and the next one waits out its backoff.
    retry_at: float | None = None
    # Set when the attempt's worker was lost (its lease lapsed) until another worker takes it.
    stalled_at: float | None = None
    archive_key: str | None = None
    archive_size: int | None = None
    archive_expires_at: float | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    trace_context: dict[str, str] = msgspec.field(default_factory=dict)
    # Where the job's terminal events are delivered (webhooks/); None for no webhook.
    callback_url: str | None = None
    # The ended job this one tries again (POST /v1/download/{job_id}/retry, the page's button).
    retry_of: str | None = None

    # The one definition of each in-between condition of `processing`: the pages and the
    # public status ask the record rather than re-deriving them from its fields.
    @property
    def waiting_to_retry(self) -> bool:
        """An attempt failed and the next one waits out its backoff (until `retry_at`)."""
        return self.status is JobState.PROCESSING and self.retry_at is not None

    @property
    def retrying(self) -> bool:
        """On a second or later attempt, or waiting to start one."""
        return self.status is JobState.PROCESSING and (self.attempt > 1 or self.waiting_to_retry)

    @property
    def waiting_for_worker(self) -> bool:
        """The attempt's worker was lost (its lease lapsed) and no other has taken the job."""
        return self.status is JobState.PROCESSING and self.stalled_at is not None


class JobStatus(Struct, kw_only=True):
    """The public view of a job (GET /v1/download/status/{job_id}, and the POST's 202 body)."""

    job_id: str
    status: JobState
    progress: Annotated[int, Meta(ge=0, le=100)]
    total_files: int
    processed_files: int
    download_url: str | None = None
    error: str | None = None
    last_error: str | None = None
    bytes_total: int = 0
    bytes_processed: int = 0
    attempt: int = 0
    max_attempts: int = 4
    skipped_file_ids: list[int] = msgspec.field(default_factory=list)
    # The requested files left out of the archive, each with its reason.
    skipped: list[SkippedFile] = msgspec.field(default_factory=list)
    on_missing: OnMissing = "skip"
    # The raw failure behind `error` / `last_error` (the storage server's answer), for operators.
    error_detail: str | None = None
    # Set while the job's worker was lost and the job waits for another (its lease lapsed).
    stalled_at: float | None = None
    waiting_for_worker: bool = False
    # While queued: 1 for the next job to start (jobs already running are not counted).
    queue_position: int | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    archive_expires_at: float | None = None
    status_url: str = ""
    events_url: str = ""
    # The callback URL (path, query values and fragment hidden) and each delivery to it.
    callback_url: str | None = None
    webhook_deliveries: list[WebhookDeliveryStatus] = msgspec.field(default_factory=list)
    # The ended job this one tries again with the same files; None for a job started afresh.
    retry_of: str | None = None
    name: str | None = None


class JobPage(Struct, kw_only=True):
    """GET /v1/downloads: a page of the caller's jobs, newest first."""

    jobs: list[JobStatus]
    # Pass as `cursor` for the next page; None on the last page.
    next_cursor: str | None = None


class JobEvent(Struct, frozen=True):
    """One entry of a job's event stream: `id` is the Redis stream id, used as the SSE id."""

    id: str
    event: str
    data: str


class ErrorBody(Struct):
    """Every 4xx/5xx body: a status code, a sentence naming the problem, and optional details."""

    status_code: int
    detail: str
    extra: list[dict[str, str]] | dict[str, str] | None = None


class HealthBody(Struct):
    status: str
    checks: dict[str, str]


def status_of(
    record: JobRecord, download_url: str | None = None, expires_at: float | None = None
) -> JobStatus:
    """The public status of a record; the caller mints the download URL when ready."""
    return JobStatus(
        job_id=record.job_id,
        status=record.status,
        progress=record.progress,
        total_files=record.total_files,
        processed_files=record.processed_files,
        download_url=download_url,
        error=record.error,
        last_error=record.last_error,
        bytes_total=record.bytes_total,
        bytes_processed=record.bytes_processed,
        attempt=record.attempt,
        max_attempts=record.max_attempts,
        skipped_file_ids=record.skipped_file_ids,
        skipped=record.skipped,
        on_missing=record.on_missing,
        error_detail=record.error_detail,
        stalled_at=record.stalled_at,
        waiting_for_worker=record.waiting_for_worker,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        expires_at=expires_at,
        archive_expires_at=record.archive_expires_at,
        status_url=f"/v1/download/status/{record.job_id}",
        events_url=f"/v1/download/subscribe/{record.job_id}",
        callback_url=redacted_url(record.callback_url) if record.callback_url else None,
        retry_of=record.retry_of,
        name=record.name,
    )
