"""The browser's one live stream: every job of the owner, new ones included, with heartbeats.

A browser allows six HTTP/1.1 connections per origin, so tabs that each held a stream starved
the seventh tab and every download. The page (frontend/static/live.js) elects one tab per
browser to hold this stream and shares its events with the other tabs over BroadcastChannel.
For that the stream follows the owner, not a list of jobs fixed when it opened:

- `job-<id>`: the live part of a job's card (HTML), whenever the job changes; for a job
  waiting in the queue, also when its place in the queue changes (backend/queueplaces.py);
- `job-new`: a whole card (`<li>` HTML) for a job of the owner the stream had not seen, started
  in any tab (or by the API with the same owner), found by re-reading the owner's job index
  every RESCAN_SECONDS;
- `ping`: a heartbeat with the server's time (epoch seconds) as data, on opening and after
  SSE_PING_SECONDS without another event. Comment pings are invisible to EventSource, and the
  page needs to see the stream is alive to tell a quiet stream from a dead one.

The stream does not end by itself (the next job may start any moment); when Redis fails it
ends, and the page tries again. Snapshots, not deltas: a reconnect needs no Last-Event-ID,
since every followed job's current card is sent again on opening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import anyio
from litestar import Request
from litestar.response import ServerSentEventMessage
from litestar.types import ASGIApp
from redis.exceptions import RedisError

from backend.api.sse import Frame, event_stream
from backend.events import EventHub
from backend.models import JobRecord
from backend.pages.panel import PANEL_JOBS, catalogue_by_id, render_card, render_live
from backend.pages.views import CatalogueRow
from backend.queueplaces import queue_places
from backend.services import Services

logger = logging.getLogger(__name__)

NEW_JOB_EVENT = "job-new"
PING_EVENT = "ping"
# How often the owner's job index is read for jobs started elsewhere: one ZREVRANGE and one
# MGET of at most PANEL_JOBS records a second per browser (not per tab).
RESCAN_SECONDS = 1.0
_BROKEN = ""

RenderLive = Callable[[JobRecord, str], str]
RenderCard = Callable[[JobRecord, Mapping[int, CatalogueRow], str], str]


def _ping() -> ServerSentEventMessage:
    return ServerSentEventMessage(event=PING_EVENT, data=f"{time.time():.0f}")


async def browser_events(
    hub: EventHub,
    services: Services,
    owner: str,
    render_live_part: RenderLive,
    render_whole_card: RenderCard,
) -> AsyncGenerator[Frame, None]:
    """The frames of the owner's stream (see the module docstring); ends on a Redis error."""
    ping_seconds = services.settings.sse_ping_seconds
    changes: asyncio.Queue[str] = asyncio.Queue()
    followers: list[asyncio.Task[None]] = []
    queue_notes: dict[str, str] = {}

    async def follow(job_id: str) -> None:
        try:
            async for event in hub.subscribe(job_id, None, idle_seconds=ping_seconds):
                if event is not None:
                    changes.put_nowait(job_id)
        except RedisError as exc:
            logger.warning("browser stream lost job %s, Redis unavailable: %s", job_id, exc)
            changes.put_nowait(_BROKEN)

    yield _ping()
    last_sent = time.monotonic()
    try:
        records = await services.store.jobs_of(owner, limit=PANEL_JOBS)
        known = {r.job_id for r in records}
        # History replays on subscribing: every running job's card is sent once on opening.
        followers.extend(
            asyncio.create_task(follow(r.job_id)) for r in records if not r.status.is_terminal
        )
        next_scan = time.monotonic()
        while True:
            batch: list[str] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_scan - time.monotonic())):
                    batch.append(await changes.get())
            while not changes.empty():
                batch.append(changes.get_nowait())
            if _BROKEN in batch:
                return
            changed = dict.fromkeys(batch)
            if time.monotonic() >= next_scan:
                next_scan = time.monotonic() + RESCAN_SECONDS
                records = await services.store.jobs_of(owner, limit=PANEL_JOBS)
                places = await queue_places(services, records)
                notes = {job_id: place.text for job_id, place in places.items()}
                new = [r for r in records if r.job_id not in known]
                names = await catalogue_by_id(services, new) if new else {}
                # Oldest first: the page puts each new card on top, so the newest ends first.
                for record in reversed(new):
                    known.add(record.job_id)
                    note = notes.get(record.job_id, "")
                    queue_notes[record.job_id] = note
                    yield ServerSentEventMessage(
                        event=NEW_JOB_EVENT, data=render_whole_card(record, names, note)
                    )
                    last_sent = time.monotonic()
                    if not record.status.is_terminal:
                        followers.append(asyncio.create_task(follow(record.job_id)))
                for record in records:
                    note = notes.get(record.job_id, "")
                    if record.job_id in queue_notes and queue_notes[record.job_id] != note:
                        changed[record.job_id] = None
                    if not record.status.is_terminal:
                        queue_notes[record.job_id] = note
            for job_id in changed:
                current = await services.store.get(job_id)
                if current is not None:
                    note = queue_notes.get(job_id, "")
                    yield ServerSentEventMessage(
                        event=f"job-{job_id}", data=render_live_part(current, note)
                    )
                    last_sent = time.monotonic()
            if time.monotonic() - last_sent >= ping_seconds:
                yield _ping()
                last_sent = time.monotonic()
    except RedisError as exc:
        logger.warning("browser stream ended, Redis unavailable: %s", exc)
    finally:
        for task in followers:
            task.cancel()
        with anyio.CancelScope(shield=True):
            for task in followers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def browser_stream(
    request: Request[Any, Any, Any], services: Services, hub: EventHub, client: str, owner: str
) -> ASGIApp:
    """The answer of `GET /events?scope=browser`: the owner's stream, in one of the client's
    stream slots (429 when all are taken)."""
    frames = browser_events(
        hub,
        services,
        owner,
        lambda record, note: render_live(request, record, note),
        lambda record, names, note: render_card(request, record, names, note),
    )
    return await event_stream(request, services, client, frames)
