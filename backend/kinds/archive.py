"""The ZIP archive kind: the requested catalogue files, streamed into one archive in the
results store at `archives/sha256/<content address>.zip`, shared by every job asking for the
same content (backend/reuse.py). Archives of older releases are at `archives/<job_id>.zip`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from backend import tracing
from backend.archive import (
    ArchiveProgress,
    SourceChanged,
    SourceMissing,
    build_archive,
    entry_names,
)
from backend.failures import describe_skipped
from backend.metrics.worker import archived
from backend.models import JobRecord, SkippedFile, SkipReason
from backend.queue import BUILD_ARCHIVE
from backend.reuse import (
    REUSED,
    SOURCE_BYTES_READ,
    WAIT_INTERVAL,
    ArchiveRegistry,
    BuilderLease,
    SharedArchive,
    content_address,
    registry_for,
    shared_archive_key,
)
from backend.runner import Attempt, JobCancelled, JobFailed
from backend.sources import resolve_sources
from backend.storage import SourceObject, Storage, StorageError

logger = logging.getLogger(__name__)

ARCHIVE_PREFIX = "archives/"
# Resolutions of one attempt's files before it gives up on files that keep changing (the
# attempt then fails as a storage error, and is retried with the usual backoff).
MAX_PLANS = 3


def archive_key_for(job_id: str) -> str:
    """Where a job's own archive lived before archives were shared (still swept)."""
    return f"{ARCHIVE_PREFIX}{job_id}.zip"


def job_of_archive_key(key: str) -> str | None:
    """The job id of a job's own archive key, or None for any other key (a shared one too)."""
    name = key.removeprefix(ARCHIVE_PREFIX)
    if name == key or not name.endswith(".zip") or "/" in name:
        return None
    return name.removesuffix(".zip") or None


class ArchiveKind:
    """One attempt at a job's archive: resolve the files, then reuse the archive of the same
    content or build it (one builder per content at a time), and record the result."""

    name = BUILD_ARCHIVE

    async def run(self, attempt: Attempt) -> None:
        registry = registry_for(attempt.services.redis, attempt.settings)
        # First as the catalogue index saw the files (no S3 request); with a HEAD each when
        # the index proves out of date, or before an existing archive is handed out.
        plan = await _plan(attempt, verify=False)
        for tries in range(1, MAX_PLANS + 1):
            try:
                shared = await _obtain(attempt, registry, plan)
                break
            except (_Outdated, SourceChanged) as exc:
                if tries == MAX_PLANS:
                    raise StorageError(
                        f"the requested files changed {tries} times while the archive was built"
                    ) from exc
                logger.debug("job %s: resolving its files again (%s)", attempt.record.job_id, exc)
                detail = exc.detail if isinstance(exc, _Outdated) else None
                plan = await _plan(attempt, verify=True, detail=detail, known=plan.names)
        await _complete(attempt, shared)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the archive will hold: the sources, their content address, whether each source's
    version was confirmed (a HEAD or a listing: `verified`) or taken from the index, and the
    name of every file asked for that is known."""

    sources: list[SourceObject]
    address: str
    verified: bool
    names: dict[int, str]


class _Outdated(Exception):
    """An unverified plan must be resolved again: a read found a file gone, or an archive of
    its address exists and would be handed out unconfirmed. `detail` is the storage's answer
    to the failed read, if any, kept for the job's `error_detail`."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


async def _plan(
    attempt: Attempt,
    *,
    verify: bool,
    detail: str | None = None,
    known: dict[int, str] | None = None,
) -> _Plan:
    """Resolve the job's files, set what it will hold and which files it skips (JobFailed,
    with `detail`, when it may not go on without them). `known` names files an earlier plan
    found, so a file gone since is still named."""
    services, record = attempt.services, attempt.record
    span = "s3.verify_sources" if verify else "s3.resolve_sources"
    with tracing.tracer().start_as_current_span(span):
        resolved = await resolve_sources(
            services.catalogue, services.storage, record.file_ids, verify=verify
        )
    found = resolved.found
    names_known = {**(known or {}), **resolved.names, **{s.file_id: s.name for s in found}}
    # A catalogue key that cannot be a file name ("<id>/..", only dots and spaces) is
    # skipped and reported like a missing file, never an internal error.
    names = entry_names(found)
    sources = [s for s, name in zip(found, names, strict=True) if name is not None]
    skipped = [
        SkippedFile(file_id=i, name=names_known.get(i, ""), reason=SkipReason.NOT_FOUND)
        for i in resolved.missing
    ]
    skipped += [
        SkippedFile(file_id=s.file_id, name=s.name, reason=SkipReason.UNNAMABLE)
        for s, name in zip(found, names, strict=True)
        if name is None
    ]
    order = {file_id: n for n, file_id in enumerate(record.file_ids)}
    shown = (record.skipped, record.total_files, record.bytes_total)
    _set_skipped(record, sorted(skipped, key=lambda f: order.get(f.file_id, 0)))
    _check_skips(record, sources, detail)
    attempt.set_totals(len(sources), sum(source.size for source in sources))
    if not verify or shown != (record.skipped, record.total_files, record.bytes_total):
        await attempt.save_progress()
    address = content_address(sources, [n for n in names if n is not None], record.on_missing)
    return _Plan(sources, address, not resolved.unconfirmed, names_known)


async def _obtain(attempt: Attempt, registry: ArchiveRegistry, plan: _Plan) -> SharedArchive:
    """The archive of `plan`: an existing one (for a verified plan), or built here, or by
    whoever builds it now. _Outdated when an unverified plan needs confirming first."""
    storage, record = attempt.services.storage, attempt.record
    while True:
        async with registry.claim(plan.address, record.job_id) as claim:
            if claim.lease is not None:
                return await _build(attempt, registry, plan, claim.lease)
        if claim.shared is not None:
            if await _usable(storage, plan, claim.shared):
                await registry.count(REUSED)
                return claim.shared
            # Its object is gone: build it again, over the record.
            async with registry.lead(plan.address, record.job_id) as lease:
                if lease is not None:
                    return await _build(attempt, registry, plan, lease)
        await _wait_for_builder(attempt, registry, plan.address)


async def _wait_for_builder(attempt: Attempt, registry: ArchiveRegistry, address: str) -> None:
    """Until another job's build of `address` ends (published, failed, or its builder died and
    its lease lapsed), showing that build's progress as this job's own."""
    store = attempt.services.store
    while (builder := await registry.builder_of(address)) is not None:
        if await registry.use(address) is not None:
            return
        building = await store.get(builder) if builder else None
        if building is not None and building.bytes_total == attempt.record.bytes_total:
            await attempt.report(building.processed_files, building.bytes_processed)
        await asyncio.sleep(WAIT_INTERVAL)


async def _usable(storage: Storage, plan: _Plan, shared: SharedArchive) -> bool:
    """Whether the recorded archive of `plan` may be handed out: its object is there (a
    HEAD). _Outdated first when the plan's files are not confirmed yet."""
    if not plan.verified:
        raise _Outdated("an archive of the same content exists; confirming the files first")
    if await storage.size_of(shared.key) != shared.size:
        # Deleted under its record (by hand, or a bucket lifecycle rule).
        logger.warning("shared archive %s is missing from the results store", shared.key)
        return False
    return True


async def _build(
    attempt: Attempt, registry: ArchiveRegistry, plan: _Plan, lease: BuilderLease
) -> SharedArchive:
    """Build the archive of `plan` (holding its builder `lease`) and publish it.

    SourceChanged when a file is no longer the version planned; _Outdated when a file of an
    unverified plan is gone (deleted or renamed since the index was built)."""
    services, record, settings = attempt.services, attempt.record, attempt.settings
    address, sources = plan.address, plan.sources
    key = shared_archive_key(address)
    read = 0

    async def on_progress(state: ArchiveProgress) -> None:
        nonlocal read
        read = state.bytes_done
        await attempt.report(state.files_done, state.bytes_done)

    # A worker killed mid-upload cannot abort its parts; the job's next attempt does. A first
    # attempt skips the LIST (one S3 request per job saved); parts left by another job's
    # builder that died are the minute sweeper's (expiry.sweep_abandoned_uploads).
    if attempt.number > 1:
        await services.storage.abort_pending_uploads(key)
    found_gone: list[SkippedFile] = []
    total_read = 0
    published = False
    try:
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
                if not plan.verified:
                    # Deleted, or renamed, since the index was built: resolve again.
                    raise _Outdated("a file is gone since the index was built", str(exc)) from exc
                # Deleted after the listing: the ZIP so far holds part of it, so the archive
                # starts over without it, in this attempt; progress shown stays where it was.
                gone = exc.source
                logger.warning("job %s: %s vanished mid-job: %s", record.job_id, gone.key, exc)
                sources = [s for s in sources if s.key != gone.key]
                found_gone.append(
                    SkippedFile(file_id=gone.file_id, name=gone.name, reason=SkipReason.NOT_FOUND)
                )
                _set_skipped(record, [*record.skipped, found_gone[-1]])
                _check_skips(record, sources, detail=str(exc))
                attempt.set_totals(len(sources), sum(source.size for source in sources))
                await attempt.save_progress()
            finally:
                total_read, read = total_read + read, 0
        shared = SharedArchive(
            address=address,
            key=key,
            size=size,
            members=len(sources),
            bytes_total=sum(source.size for source in sources),
            skipped=found_gone,
            built_at=time.time(),
        )
        # With its counters, in the same round trip.
        await registry.publish(
            shared, settings.archive_ttl_seconds, source_bytes_read=total_read, lease=lease
        )
        published = True
    finally:
        if not published:
            await registry.count(SOURCE_BYTES_READ, total_read)
    archived(size)
    return shared


async def _complete(attempt: Attempt, shared: SharedArchive) -> None:
    """The job is ready with `shared`: its content's counts, its own expiry and link."""
    record, settings = attempt.record, attempt.settings
    known = {file.file_id for file in record.skipped}
    _set_skipped(record, [*record.skipped, *(f for f in shared.skipped if f.file_id not in known)])
    attempt.set_totals(shared.members, shared.bytes_total)
    record.archive_key = shared.key
    record.archive_size = shared.size
    record.finished_at = time.time()
    # The job's own link lasts from its own use; the shared archive outlives every job's.
    record.archive_expires_at = record.finished_at + settings.archive_ttl_seconds
    if not await attempt.complete():
        # Cancelled at the last moment. The archive stays: other jobs may share it, and
        # the sweeper deletes it once unused for ARCHIVE_TTL_SECONDS.
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
