"""Results expire: archives past ARCHIVE_TTL_SECONDS are deleted and their jobs say so."""

from __future__ import annotations

import time
from typing import Any

from backend.models import JobState
from backend.services import Services


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


async def sweep_cron(ctx: dict[str, Any]) -> int:
    return await sweep_expired_archives(ctx["services"])
