"""Results expire: a job's link lasts ARCHIVE_TTL_SECONDS from the job's own end (then it says
`expired`); a shared archive is deleted once ARCHIVE_TTL_SECONDS have passed since any job last
used it, which is never before the jobs using it have expired; and uploads that no attempt will
finish are aborted, so no parts linger in the results bucket."""

from __future__ import annotations

import logging
import time
from typing import Any

from backend.kinds.archive import ARCHIVE_PREFIX, job_of_archive_key
from backend.models import JobState
from backend.reuse import address_of_key, registry_for, shared_archive_key
from backend.services import Services
from backend.storage import StorageError

logger = logging.getLogger(__name__)


async def sweep_expired_archives(services: Services) -> int:
    """Mark ready jobs past their ARCHIVE_TTL_SECONDS `expired`; returns how many.

    A job's own archive (from before archives were shared) goes with it; a shared one is
    left to `sweep_unused_archives`, as other jobs may still be using it.
    """
    swept = 0
    for job_id in await services.store.due_for_expiry(time.time()):
        record = await services.store.get(job_id)
        if record is None or record.status is not JobState.READY:
            await services.store.forget_expiry(job_id)
            continue
        if record.archive_key and job_of_archive_key(record.archive_key) == job_id:
            await services.storage.delete(record.archive_key)
        if await services.store.expire(record) is not None:
            swept += 1
    return swept


async def sweep_unused_archives(services: Services, now: float | None = None) -> int:
    """Delete shared archives unused for ARCHIVE_TTL_SECONDS; returns how many.

    Each is deleted holding its builder lease, and its record is dropped (atomically, only if
    still unused) before the object: a job that uses it first keeps it; one that comes after
    finds no record and builds it anew, once the lease is free.
    """
    registry = registry_for(services.redis, services.settings)
    cutoff = (now or time.time()) - services.settings.archive_ttl_seconds
    deleted = 0
    for address in await registry.unused_since(cutoff):
        async with registry.lead(address) as leading:
            if not leading or not await registry.forget_if_unused(address, cutoff):
                continue
            await services.storage.delete(shared_archive_key(address))
            await registry.drop_from_index(address)
            deleted += 1
    return deleted


async def sweep_abandoned_uploads(services: Services) -> int:
    """Abort archive uploads whose job has ended or is gone; returns how many were aborted.

    Each attempt aborts its own upload when it fails, and the next attempt aborts what a
    crashed one left; but an attempt whose abort met a storage outage, followed by a cancel
    (so no next attempt), leaves its parts behind. A job still queued or running keeps its
    upload: its next attempt cleans up.
    """
    registry = registry_for(services.redis, services.settings)
    aborted = 0
    for key, upload_id in await services.storage.results.pending_uploads_under(ARCHIVE_PREFIX):
        address = address_of_key(key)
        if address is not None:
            # A shared archive's upload is live while its builder holds the lease.
            if await registry.building_now(address):
                continue
        else:
            job_id = job_of_archive_key(key)
            record = await services.store.get(job_id) if job_id else None
            if record is not None and not record.status.is_terminal:
                continue
        await services.storage.results.abort_upload(key, upload_id)
        aborted += 1
    return aborted


async def sweep_cron(ctx: dict[str, Any]) -> int:
    services: Services = ctx["services"]
    swept = await sweep_expired_archives(services)
    try:
        swept += await sweep_unused_archives(services)
    except StorageError as exc:
        logger.warning("could not sweep unused archives: %s", exc)
    try:
        aborted = await sweep_abandoned_uploads(services)
    except StorageError as exc:
        logger.warning("could not sweep abandoned uploads: %s", exc)
        aborted = 0
    return swept + aborted
