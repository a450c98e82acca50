"""The page's one event stream: every running job of the browser, as HTML for htmx to swap.

Browsers allow six HTTP/1.1 connections per origin, so a page holds a single stream for all of
its jobs instead of one per job. Each event is named `job-<id>` and carries the card's live part
rendered from the current record: a snapshot, not a delta, so a reconnect needs no resume point
and a burst of events collapses into one render. After the last job ends the stream says `done`
(the page closes it) instead of ending, which EventSource would take as a cue to reconnect.

`done` carries an `id:` at or after the last event of every job the stream followed. A client
that reconnects anyway sends it back as Last-Event-ID, and when every job still has nothing
after it the answer is `204`, which stops EventSource for good; so is a stream that would follow
no job at all. Any other Last-Event-ID is ignored: snapshots are right without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Annotated, Any

import anyio
from litestar import Request, get
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from litestar.response import ServerSentEventMessage
from litestar.types import ASGIApp
from redis.exceptions import RedisError

from backend.api.sse import Frame, event_stream, nothing_to_stream
from backend.downloads import UnknownJob, find_job, is_job_id
from backend.events import EventHub
from backend.jobevents import is_terminal_event
from backend.jobs import parse_event_id
from backend.models import JobRecord
from backend.pages.browser import browser_owner
from backend.pages.livefeed import browser_stream
from backend.pages.panel import PANEL_JOBS, render_live
from backend.services import Services

logger = logging.getLogger(__name__)

DONE_EVENT = "done"
BROWSER_SCOPE = "browser"
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


async def nothing_follows(
    services: Services, records: Sequence[JobRecord], last_event_id: str | None
) -> bool:
    """Whether the stream has nothing to send: no job to follow, or every job has ended with
    no event after `last_event_id` (the id of a `done` this client already received)."""
    if not records:
        return True
    position = parse_event_id(last_event_id) if last_event_id else None
    if position is None:
        return False
    for record in records:
        bounds = await services.store.first_and_last_events(record.job_id)
        if bounds is None:
            return False
        last = bounds[1]
        if not is_terminal_event(last.event) or (parse_event_id(last.id) or position) > position:
            return False
    return True


async def page_events(
    hub: EventHub,
    services: Services,
    records: Sequence[JobRecord],
    render: Callable[[JobRecord], str],
) -> AsyncGenerator[Frame, None]:
    """Each job's card whenever it changes, None while idle, `done` once every job has ended."""
    changes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    ping_seconds = services.settings.sse_ping_seconds
    last_ids: dict[str, str] = {}

    async def follow(job_id: str) -> None:
        try:
            async for event in hub.subscribe(job_id, None, idle_seconds=ping_seconds):
                if event is not None:
                    last_ids[job_id] = event.id
                    changes.put_nowait((job_id, _CHANGED))
        except RedisError as exc:
            logger.warning("page stream lost job %s, Redis unavailable: %s", job_id, exc)
            changes.put_nowait((job_id, _BROKEN))
            return
        changes.put_nowait((job_id, _ENDED))

    followers = [asyncio.create_task(follow(r.job_id)) for r in records]
    running = len(followers)
    try:
        while running:
            try:
                async with asyncio.timeout(ping_seconds):
                    batch = [await changes.get()]
            except TimeoutError:
                yield None
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
        position = max(last_ids.values(), key=lambda i: parse_event_id(i) or (0, 0), default="")
        yield ServerSentEventMessage(event=DONE_EVENT, data="all jobs ended", id=position or None)
    finally:
        for task in followers:
            task.cancel()
        with anyio.CancelScope(shield=True):
            for task in followers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


@get("/events", include_in_schema=False)
async def job_stream(
    request: Request[Any, Any, Any],
    services: Services,
    hub: EventHub,
    client: str,
    jobs: Annotated[str, Parameter(query="jobs", required=False)] = "",
    stream_scope: Annotated[str, Parameter(query="scope", required=False)] = "",
    last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID", required=False)] = None,
) -> ASGIApp:
    """The page's event stream for `jobs` (the browser's own; others are left out), or with
    `scope=browser` every job of the browser, new ones included (pages/livefeed.py)."""
    owner = browser_owner(request, services.settings).owner
    if stream_scope == BROWSER_SCOPE:
        return await browser_stream(request, services, hub, client, owner)
    if stream_scope:
        raise HTTPException(
            status_code=400,
            detail=f"scope: {stream_scope[:32]!r} is not a scope; the one is {BROWSER_SCOPE!r}",
        )
    records = []
    for job_id in parse_job_ids(jobs):
        with contextlib.suppress(UnknownJob):
            records.append(await find_job(services, job_id, owner))
    if await nothing_follows(services, records, last_event_id):
        return nothing_to_stream(request)
    frames = page_events(hub, services, records, lambda r: render_live(request, r))
    return await event_stream(request, services, client, frames)
