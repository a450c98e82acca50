"""Trying an ended job again: a new job with the same files, linked to the one it retries.

One code path for the API (POST /v1/download/{job_id}/retry) and the page's "Try again".
The ended job's record is left as it is: a job in a terminal state never changes (jobs.py),
so the link goes one way, from the new job (`retry_of`) to the old.
"""

from __future__ import annotations

from backend.downloads import start_job
from backend.models import JobRecord, JobState
from backend.services import Services

# A ready job has its archive; an expired one's was deleted, so trying again builds it anew.
RETRYABLE = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED})


class NotRetryable(Exception):
    """The job is still queued or running, or ready: there is nothing to try again."""

    def __init__(self, record: JobRecord) -> None:
        super().__init__(
            f"job {record.job_id} is {record.status.value}; only failed, cancelled or expired "
            "jobs can be tried again"
        )
        self.record = record


async def retry_job(
    services: Services,
    record: JobRecord,
    owner: str,
    idempotency_key: str | None = None,
    client: str | None = None,
) -> JobRecord:
    """Start a new job with `record`'s files and options (callback URL, on_missing, archive
    name) for `owner`; NotRetryable unless it has ended failed, cancelled or expired.
    Idempotency-Keys and limits work as for a new job."""
    if record.status not in RETRYABLE:
        raise NotRetryable(record)
    return await start_job(
        services,
        record.file_ids,
        owner,
        idempotency_key,
        client,
        callback_url=record.callback_url,
        retry_of=record.job_id,
        on_missing=record.on_missing,
        name=record.name,
    )
