"""Results expire: archives past ARCHIVE_TTL_SECONDS are deleted and their jobs say so; and
uploads that no attempt will finish are aborted, so no parts linger in the results bucket."""

from __future__ import annotations

import logging
import time
from typing import Any

from backend.kinds.archive import ARCHIVE_PREFIX, job_of_archive_key
from backend.models import JobState
from backend.services import Services
from backend.storage import StorageError

logger = logging.getLogger(__name__)


async def sweep_expired_archives(services: Services) -> int:
    """Delete archives past ARCHIVE_TTL_SECONDS and mark their jobs `expired`."""
    swept = 0
    for job_id in await services.store.due_for_expiry(time.time()):
        record = await services.store.get(job_id)
        if record is None or record.status is not JobState.READY:
            await services.store.forget_expiry(job_id)
            continue
        if record.archive_key:
            await services.storage.delete(record.archive_key)
        if await services.store.expire(record) is not None:
            swept += 1
    return swept


async def sweep_abandoned_uploads(services: Services) -> int:
    """Abort archive uploads whose job has ended or is gone; returns how many were aborted.

    Each attempt aborts its own upload when it fails, and the next attempt aborts what a
    crashed one left; but an attempt whose abort met a storage outage, followed by a cancel
    (so no next attempt), leaves its parts behind. A job still queued or running keeps its
    upload: its next attempt cleans up.
    """
    aborted = 0
    for key, upload_id in await services.storage.results.pending_uploads_under(ARCHIVE_PREFIX):
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
        aborted = await sweep_abandoned_uploads(services)
    except StorageError as exc:
        logger.warning("could not sweep abandoned uploads: %s", exc)
        aborted = 0
    return swept + aborted
