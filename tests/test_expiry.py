"""The sweeper on real Redis and S3: abandoned archive uploads are aborted, live ones kept."""

from __future__ import annotations

import uuid

from backend.expiry import sweep_abandoned_uploads
from backend.kinds.archive import archive_key_for, job_of_archive_key
from backend.models import JobRecord, JobState
from backend.services import Services


async def job_with_pending_upload(services: Services, status: JobState | None) -> str:
    """A job (in `status`, or with no record at all) whose archive upload has one part in."""
    job_id = uuid.uuid4().hex
    if status is not None:
        record = JobRecord(job_id=job_id, owner="public", file_ids=[1])
        await services.store.create(record)
        if status is not JobState.QUEUED:
            record.status = status
            await services.store.save(record)
    upload = services.storage.start_upload(archive_key_for(job_id))
    await upload.write_part(b"part of an archive nobody will finish", 1)
    return job_id


async def test_uploads_of_ended_or_vanished_jobs_are_aborted_and_live_ones_kept(
    services: Services,
) -> None:
    cancelled = await job_with_pending_upload(services, JobState.CANCELLED)
    failed = await job_with_pending_upload(services, JobState.FAILED)
    vanished = await job_with_pending_upload(services, None)
    running = await job_with_pending_upload(services, JobState.PROCESSING)
    queued = await job_with_pending_upload(services, JobState.QUEUED)

    assert await sweep_abandoned_uploads(services) == 3

    for job_id in (cancelled, failed, vanished):
        assert await services.storage.pending_uploads(archive_key_for(job_id)) == []
    for job_id in (running, queued):
        assert len(await services.storage.pending_uploads(archive_key_for(job_id))) == 1
    assert await sweep_abandoned_uploads(services) == 0


def test_archive_keys_name_their_job_and_nothing_else_does() -> None:
    job_id = uuid.uuid4().hex
    assert job_of_archive_key(archive_key_for(job_id)) == job_id
    for other in ("archives/", "archives/.zip", "other/x.zip", "archives/x.tar", job_id):
        assert job_of_archive_key(other) is None
