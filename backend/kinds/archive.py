"""The ZIP archive kind: the requested catalogue files, streamed into one archive in the
results store, named `archives/<job_id>.zip`.
"""

from __future__ import annotations

import logging
import time

from backend import tracing
from backend.archive import ArchiveProgress, SourceMissing, build_archive, entry_names
from backend.failures import describe_skipped
from backend.models import JobRecord, SkippedFile, SkipReason
from backend.queue import BUILD_ARCHIVE
from backend.runner import Attempt, JobCancelled, JobFailed
from backend.storage import SourceObject

logger = logging.getLogger(__name__)

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
            found, missing = await services.storage.resolve(record.file_ids)
        # A catalogue key that cannot be a file name ("<id>/..", only dots and spaces) is
        # skipped and reported like a missing file, never an internal error.
        names = entry_names(found)
        sources = [s for s, name in zip(found, names, strict=True) if name is not None]
        skipped = [SkippedFile(file_id=i, reason=SkipReason.NOT_FOUND) for i in missing]
        skipped += [
            SkippedFile(file_id=s.file_id, name=s.name, reason=SkipReason.UNNAMABLE)
            for s, name in zip(found, names, strict=True)
            if name is None
        ]
        order = {file_id: n for n, file_id in enumerate(record.file_ids)}
        _set_skipped(record, sorted(skipped, key=lambda f: order.get(f.file_id, 0)))
        _check_skips(record, sources)
        attempt.set_totals(len(sources), sum(source.size for source in sources))
        await attempt.save_progress()

        async def on_progress(state: ArchiveProgress) -> None:
            await attempt.report(state.files_done, state.bytes_done)

        key = archive_key_for(record.job_id)
        # A worker killed mid-upload cannot abort its parts; the next attempt does.
        await services.storage.abort_pending_uploads(key)
        while True:
            try:
                size = await build_archive(
                    services.storage,
                    sources,
                    key,
                    on_progress=on_progress,
                    part_size=settings.archive_part_size,
                    throttle_bytes_per_second=settings.throttle_bytes_per_second,
                )
                break
            except SourceMissing as exc:
                # Deleted after the listing: the ZIP so far holds part of it, so the archive
                # starts over without it, in this attempt; progress shown stays where it was.
                gone = exc.source
                logger.warning("job %s: %s vanished mid-job: %s", record.job_id, gone.key, exc)
                sources = [s for s in sources if s.key != gone.key]
                _set_skipped(
                    record,
                    [
                        *record.skipped,
                        SkippedFile(
                            file_id=gone.file_id, name=gone.name, reason=SkipReason.NOT_FOUND
                        ),
                    ],
                )
                _check_skips(record, sources, detail=str(exc))
                attempt.set_totals(len(sources), sum(source.size for source in sources))
                await attempt.save_progress()
        record.archive_key = key
        record.archive_size = size
        record.finished_at = time.time()
        record.archive_expires_at = record.finished_at + settings.archive_ttl_seconds
        if not await attempt.complete():
            # Cancelled at the last moment: the archive must not outlive the job.
            await services.storage.delete(key)
            raise JobCancelled


def _set_skipped(record: JobRecord, skipped: list[SkippedFile]) -> None:
    record.skipped = skipped
    # The older field, kept for clients that read it.
    record.skipped_file_ids = [file.file_id for file in skipped]


def _check_skips(record: JobRecord, sources: list[SourceObject], detail: str | None = None) -> None:
    """JobFailed when the job may not go on without its skipped files, or has none left."""
    if record.skipped and record.on_missing == "fail":
        raise JobFailed(f"{describe_skipped(record.skipped)}; the request asked to fail", detail)
    if not sources:
        raise JobFailed(
            f"none of the requested files exist or has a usable name (file_ids {record.file_ids})",
            detail,
        )


ARCHIVE = ArchiveKind()
