"""The page's one event stream: every running job of the browser, as HTML for htmx to swap.

Browsers allow six HTTP/1.1 connections per origin, so a page holds a single stream for all of
its jobs instead of one per job. Each event is named `job-<id>` and carries the card's live part
rendered from the current record: a snapshot, not a delta, so a reconnect needs no resume point
and a burst of events collapses into one render. After the last job ends the stream says `done`
(the page closes it) instead of ending, which EventSource would take as a cue to reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any

import anyio
from litestar import Request, get
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from redis.exceptions import RedisError

from backend.api.downloads import SSE_HEADERS, SSE_RETRY_MS
from backend.downloads import UnknownJob, find_job, is_job_id
from backend.events import EventHub
from backend.models import JobRecord
from backend.pages.browser import browser_owner
from backend.pages.panel import PANEL_JOBS, render_live
from backend.ratelimit import StreamLease, open_stream
from backend.services import Services

logger = logging.getLogger(__name__)

DONE_EVENT = "done"
_CHANGED, _ENDED, _BROKEN = "changed", "ended", "broken"


def parse_job_ids(raw: str) -> list[str]:
    """The ids of `jobs=a,b,c`; 400 naming the first one that is not a job id."""
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    if len(ids) > PANEL_JOBS:
        raise HTTPException(
            status_code=400, detail=f"jobs: at most {PANEL_JOBS} job ids, got {len(ids)}"
        )
    for job_id in ids:
        if not is_job_id(job_id):
            raise HTTPException(
                status_code=400, detail=f"jobs: {job_id[:64]!r} is not a job id (32 hex digits)"
            )
    return list(dict.fromkeys(ids))


async def page_events(
    hub: EventHub,
    services: Services,
    records: Sequence[JobRecord],
    render: Callable[[JobRecord], str],
    lease: StreamLease | None = None,
) -> AsyncIterator[ServerSentEventMessage]:
    """SSE frames: each job's card whenever it changes, pings while idle, `done` at the end."""
    changes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    ping_seconds = services.settings.sse_ping_seconds

    async def follow(job_id: str) -> None:
        try:
            async for event in hub.subscribe(job_id, None, idle_seconds=ping_seconds):
                if event is not None:
                    changes.put_nowait((job_id, _CHANGED))
        except RedisError as exc:
            logger.warning("page stream lost job %s, Redis unavailable: %s", job_id, exc)
            changes.put_nowait((job_id, _BROKEN))
            return
        changes.put_nowait((job_id, _ENDED))

    followers = [asyncio.create_task(follow(r.job_id)) for r in records]
    running = len(followers)
    yield ServerSentEventMessage(comment="stream open", retry=SSE_RETRY_MS, data=None)
    try:
        while running:
            try:
                batch = [await asyncio.wait_for(changes.get(), ping_seconds)]
            except TimeoutError:
                if lease is not None:
                    await lease.renew()
                yield ServerSentEventMessage(comment="ping", data=None)
                continue
            # Replayed history arrives in a burst: one render per job covers all of it.
            while not changes.empty():
                batch.append(changes.get_nowait())
            if any(kind == _BROKEN for _, kind in batch):
                # Ending without `done` makes the page fall back to polling.
                return
            for job_id in dict.fromkeys(job_id for job_id, _ in batch):
                record = await services.store.get(job_id)
                if record is not None:
                    yield ServerSentEventMessage(event=f"job-{job_id}", data=render(record))
            running -= sum(1 for _, kind in batch if kind == _ENDED)
        yield ServerSentEventMessage(event=DONE_EVENT, data="all jobs ended")
    except RedisError as exc:
        logger.warning("page stream ended early, Redis unavailable: %s", exc)
    finally:
        for task in followers:
            task.cancel()
        with anyio.CancelScope(shield=True):
            for task in followers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if lease is not None:
                await lease.release()


@get("/events", include_in_schema=False)
async def job_stream(
    request: Request[Any, Any, Any],
    services: Services,
    hub: EventHub,
    client: str,
    jobs: Annotated[str, Parameter(query="jobs", required=False)] = "",
) -> ServerSentEvent:
    """The page's event stream for `jobs` (the browser's own; others are left out)."""
    owner = browser_owner(request, services.settings).owner
    records = []
    for job_id in parse_job_ids(jobs):
        with contextlib.suppress(UnknownJob):
            records.append(await find_job(services, job_id, owner))
    lease = await open_stream(
        services.redis,
        services.settings.key_prefix,
        client,
        services.settings.max_streams_per_client,
    )
    events = page_events(hub, services, records, lambda r: render_live(request, r), lease)
    return ServerSentEvent(events, headers=SSE_HEADERS)
