"""The ZIP archive kind: the requested catalogue files, streamed into one archive in the
results store, named `archives/<job_id>.zip`.
"""

from __future__ import annotations

import time

from backend import tracing
from backend.archive import ArchiveProgress, build_archive, entry_names
from backend.metrics.worker import archived
from backend.queue import BUILD_ARCHIVE
from backend.runner import Attempt, JobCancelled, JobFailed

ARCHIVE_PREFIX = "archives/"


def archive_key_for(job_id: str) -> str:
    """Where the job's archive lives in the results store."""
    # One deterministic key per job: a re-run after a crash overwrites, it never adds a copy.
    return f"{ARCHIVE_PREFIX}{job_id}.zip"


def job_of_archive_key(key: str) -> str | None:
    """The job id an archive key belongs to, or None for any other key."""
    name = key.removeprefix(ARCHIVE_PREFIX)
    if name == key or not name.endswith(".zip"):
        return None
    return name.removesuffix(".zip") or None


class ArchiveKind:
    """One attempt at a job's archive: resolve the files, stream the ZIP, record the result."""

    name = BUILD_ARCHIVE

    async def run(self, attempt: Attempt) -> None:
        services, record, settings = attempt.services, attempt.record, attempt.settings
        with tracing.tracer().start_as_current_span("s3.resolve_sources"):
            sources, missing = await services.storage.resolve(record.file_ids)
        # A catalogue key that cannot be a file name ("<id>/..", only dots and spaces) is
        # skipped and reported like a missing file, never an internal error.
        names = entry_names(sources)
        unusable = [s.file_id for s, name in zip(sources, names, strict=True) if name is None]
        sources = [s for s, name in zip(sources, names, strict=True) if name is not None]
        record.skipped_file_ids = missing + unusable
        if not sources:
            raise JobFailed(
                "none of the requested files exist or has a usable name "
                f"(file_ids {record.file_ids})"
            )
        record.total_files = len(sources)
        record.bytes_total = sum(source.size for source in sources)
        record.processed_files = 0
        record.bytes_processed = 0
        record.progress = 0
        await attempt.save_progress()

        async def on_progress(state: ArchiveProgress) -> None:
            await attempt.report(state.files_done, state.bytes_done)

        key = archive_key_for(record.job_id)
        # A worker killed mid-upload cannot abort its parts; the next attempt does. A first
        # attempt has no predecessor, so it skips the LIST (one S3 request per job saved).
        if attempt.number > 1:
            await services.storage.abort_pending_uploads(key)
        size = await build_archive(
            services.storage,
            sources,
            key,
            on_progress=on_progress,
            part_size=settings.archive_part_size,
            throttle_bytes_per_second=settings.throttle_bytes_per_second,
        )
        archived(size)
        record.archive_key = key
        record.archive_size = size
        record.finished_at = time.time()
        record.archive_expires_at = record.finished_at + settings.archive_ttl_seconds
        if not await attempt.complete():
            # Cancelled at the last moment: the archive must not outlive the job.
            await services.storage.delete(key)
            raise JobCancelled


ARCHIVE = ArchiveKind()
