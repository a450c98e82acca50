"""The typed vocabulary of a job's events: their names, the data of each, and how to make it.

One enum names every SSE `event:`; one Struct per name is its `data:`; one builder per event
makes that Struct from the job record, so the worker, the job store, the lease watch and the
cancel path cannot disagree on a payload. Terminal events derive from models.TERMINAL_STATES.
Plain msgspec, no server code: the command-line client decodes events with it too.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from backend.models import TERMINAL_STATES, JobRecord, JobState, SkippedFile


class JobEventName(enum.StrEnum):
    """Every SSE `event:` name a job's stream carries; JOB_EVENTS gives each one's data."""

    PROGRESS = "progress"
    RETRYING = "retrying"
    STALLED = "stalled"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# The event that announces each terminal state: the one place the two vocabularies meet.
_ENDING_EVENTS = {
    JobState.READY: JobEventName.COMPLETED,
    JobState.FAILED: JobEventName.FAILED,
    JobState.CANCELLED: JobEventName.CANCELLED,
    JobState.EXPIRED: JobEventName.EXPIRED,
}


def terminal_event_for(state: JobState) -> JobEventName:
    """The event that announces a job reaching terminal `state` (KeyError for any other)."""
    return _ENDING_EVENTS[state]


# Derived from TERMINAL_STATES, so a new terminal state cannot be missing from the streams'
# ending (a KeyError at import instead).
TERMINAL_EVENTS = frozenset(terminal_event_for(state) for state in TERMINAL_STATES)


def is_terminal_event(event: str) -> bool:
    """Whether `event` (a stored or received name, perhaps unknown) ends a job's stream."""
    return event in TERMINAL_EVENTS


# The data of each SSE event (GET /v1/download/subscribe/{job_id}): one builder per event makes
# it from the job record, the job store encodes it under its `name`, clients decode it with
# `decode_event`, the OpenAPI schema shows it. The name is a property rather than a msgspec tag
# because a tag would add a field to every payload on the wire.

STALLED_REASON = "waiting for a worker"


class ProgressEvent(Struct, kw_only=True):
    """`event: progress`: everything a progress bar needs."""

    status: JobState
    progress: Annotated[int, Meta(ge=0, le=100)]
    processed_files: int
    total_files: int
    bytes_processed: int
    bytes_total: int
    attempt: int
    max_attempts: int

    @property
    def name(self) -> JobEventName:
        return JobEventName.PROGRESS


class RetryingEvent(ProgressEvent, kw_only=True):
    """`event: retrying`: an attempt failed with `error`; the next starts in `retry_in` s."""

    error: str
    retry_in: float

    @property
    def name(self) -> JobEventName:
        return JobEventName.RETRYING


class StalledEvent(ProgressEvent, kw_only=True):
    """`event: stalled`: the worker running the job was lost (its lease lapsed); the job
    waits for another worker, which resumes it with a new attempt."""

    reason: str

    @property
    def name(self) -> JobEventName:
        return JobEventName.STALLED


class CompletedEvent(Struct, kw_only=True):
    """`event: completed`: the archive is ready at `download_url` (presigned, one hour)."""

    # None when the archive has expired since (an `expired` event follows).
    download_url: str | None
    archive_size: int
    total_files: int
    skipped_file_ids: list[int]
    # The requested files left out, each with its reason (absent in events stored before it).
    skipped: list[SkippedFile] = msgspec.field(default_factory=list)

    @property
    def name(self) -> JobEventName:
        return JobEventName.COMPLETED


class FailedEvent(Struct, kw_only=True):
    """`event: failed`: the last attempt failed; `error` says why."""

    error: str
    attempt: int

    @property
    def name(self) -> JobEventName:
        return JobEventName.FAILED


class EndedEvent(Struct, kw_only=True):
    """`event: cancelled` and `event: expired`: the job ended without (or lost) its archive."""

    status: JobState

    @property
    def name(self) -> JobEventName:
        # One Struct, two events: the state it carries names it (KeyError for any other).
        return {JobState.CANCELLED: JobEventName.CANCELLED, JobState.EXPIRED: JobEventName.EXPIRED}[
            self.status
        ]


JobEventData = (
    ProgressEvent | RetryingEvent | StalledEvent | CompletedEvent | FailedEvent | EndedEvent
)

JOB_EVENTS: dict[JobEventName, type[JobEventData]] = {
    JobEventName.PROGRESS: ProgressEvent,
    JobEventName.RETRYING: RetryingEvent,
    JobEventName.STALLED: StalledEvent,
    JobEventName.COMPLETED: CompletedEvent,
    JobEventName.FAILED: FailedEvent,
    JobEventName.CANCELLED: EndedEvent,
    JobEventName.EXPIRED: EndedEvent,
}


def progress_event(record: JobRecord) -> ProgressEvent:
    """`progress`: the record's figures as they are now."""
    return ProgressEvent(**_figures(record))


def retrying_event(record: JobRecord, retry_in: float) -> RetryingEvent:
    """`retrying`: the attempt that failed with `record.last_error`, the next in `retry_in` s.

    `retry_in` is the backoff as scheduled: `retry_at` minus now would read 1.9999 s.
    """
    return RetryingEvent(**_figures(record), error=record.last_error or "", retry_in=retry_in)


def stalled_event(record: JobRecord) -> StalledEvent:
    """`stalled`: the record's figures when its worker was found lost."""
    return StalledEvent(**_figures(record), reason=STALLED_REASON)


def completed_event(record: JobRecord, download_url: str | None = None) -> CompletedEvent:
    """`completed`: the record's archive. The job store keeps it without a URL: presigned links
    expire, so every delivery of the event mints its own (downloads.job_events)."""
    return CompletedEvent(
        download_url=download_url,
        archive_size=record.archive_size or 0,
        total_files=record.total_files,
        skipped_file_ids=record.skipped_file_ids,
        skipped=record.skipped,
    )


def failed_event(record: JobRecord) -> FailedEvent:
    """`failed`: the record's error and the attempt that ended it."""
    return FailedEvent(error=record.error or "", attempt=record.attempt)


def ended_event(record: JobRecord) -> EndedEvent:
    """`cancelled` or `expired`, as the record's status says."""
    return EndedEvent(status=record.status)


def terminal_event(record: JobRecord) -> JobEventData:
    """The event announcing the record's terminal state (KeyError if it has not ended)."""
    builders: dict[JobState, Callable[[JobRecord], JobEventData]] = {
        JobState.READY: completed_event,
        JobState.FAILED: failed_event,
        JobState.CANCELLED: ended_event,
        JobState.EXPIRED: ended_event,
    }
    return builders[record.status](record)


def decode_event(name: str, data: str | bytes) -> JobEventData | None:
    """The data of event `name`, decoded and validated into its Struct.

    None for a name this code does not know (a newer server's): readers skip it, which keeps
    old clients working when events are added. Malformed data raises msgspec.DecodeError.
    """
    try:
        kind = JOB_EVENTS[JobEventName(name)]
    except ValueError:
        return None
    return msgspec.json.decode(data, type=kind)


def _figures(record: JobRecord) -> dict[str, Any]:
    # Shared by every ProgressEvent kind, so their common fields cannot drift apart.
    return {
        "status": record.status,
        "progress": record.progress,
        "processed_files": record.processed_files,
        "total_files": record.total_files,
        "bytes_processed": record.bytes_processed,
        "bytes_total": record.bytes_total,
        "attempt": record.attempt,
        "max_attempts": record.max_attempts,
    }
