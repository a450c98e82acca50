"""Follow a job to its end: SSE first, resuming with Last-Event-ID, polling when SSE fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import msgspec
from httpx_sse import SSEError

from backend.client.api import Transport, events_path, status_path
from backend.client.errors import ApiError, Unreachable
from backend.jobevents import (
    CompletedEvent,
    EndedEvent,
    FailedEvent,
    JobEventData,
    ProgressEvent,
    RetryingEvent,
    StalledEvent,
    decode_event,
    is_terminal_event,
)
from backend.models import JobState, JobStatus

# What a progress event and a status answer both carry, under the same names.
_COUNTS = (
    "progress",
    "processed_files",
    "total_files",
    "bytes_processed",
    "bytes_total",
    "attempt",
    "max_attempts",
)


@dataclass
class JobProgress:
    """What a progress display needs, merged from events and status answers alike."""

    job_id: str
    status: JobState = JobState.QUEUED
    progress: int = 0
    processed_files: int = 0
    total_files: int = 0
    bytes_processed: int = 0
    bytes_total: int = 0
    attempt: int = 0
    max_attempts: int = 0
    error: str | None = None
    retry_in: float | None = None
    # The job's worker was lost; it waits for another (a `stalled` event).
    waiting_for_worker: bool = False
    # When the server recorded the event (seconds), from its stream id: replayed history
    # then shows its real pace, not the burst it arrives in.
    at: float | None = None

    def _take_counts(self, source: ProgressEvent | JobStatus) -> None:
        # A progress event and a status answer name these fields alike.
        for name in _COUNTS:
            setattr(self, name, getattr(source, name))

    def apply_event(self, data: JobEventData, event_id: str = "") -> None:
        """Merge one decoded event (see jobevents.decode_event) with the SSE id it came with."""
        millis, _, _ = event_id.partition("-")
        self.at = int(millis) / 1000 if millis.isdigit() else None
        # Only the events that say so carry an error, a backoff or a lost worker.
        self.error = None
        self.retry_in = None
        self.waiting_for_worker = False
        match data:
            case ProgressEvent():  # and its kinds: RetryingEvent, StalledEvent
                self.status = data.status
                self._take_counts(data)
                if isinstance(data, RetryingEvent):
                    self.error, self.retry_in = data.error, data.retry_in
                self.waiting_for_worker = isinstance(data, StalledEvent)
            case CompletedEvent():
                self.status = JobState.READY
                self.total_files = data.total_files
                self.progress = 100
            case FailedEvent():
                self.status = JobState.FAILED
                self.error = data.error
                self.attempt = data.attempt
            case EndedEvent():
                self.status = data.status

    def apply_status(self, status: JobStatus) -> None:
        self.status = status.status
        self._take_counts(status)
        self.error = status.error or (
            status.last_error if self.status is JobState.PROCESSING else None
        )
        self.retry_in = None
        self.waiting_for_worker = status.waiting_for_worker
        self.at = None


@dataclass
class Followed:
    """How following ended: the final status, and how it was reached."""

    status: JobStatus
    mode: str  # "sse", or "poll" once the stream was given up
    reconnects: int = 0
    events: int = 0
    last_event_id: str | None = None


@dataclass
class _Tally:
    reconnects: int = 0
    events: int = 0
    last_event_id: str | None = None


OnUpdate = Callable[[JobProgress], None]
OnNote = Callable[[str], None]


@dataclass
class Follower:
    """Follows one job. `max_stream_failures` streams in a row that bring no event mean
    SSE cannot get through (a proxy buffering or blocking it): poll from then on."""

    transport: Transport
    on_update: OnUpdate = lambda view: None
    on_note: OnNote = lambda text: None
    poll_interval: float = 2.0
    max_stream_failures: int = 3
    reconnect_delay: float = 2.0
    # Polling gives up after this long without any answer from the API.
    unreachable_after: float = 60.0

    async def follow(self, job_id: str, use_sse: bool = True) -> Followed:
        view = JobProgress(job_id)
        tally = _Tally()
        if use_sse:
            status = await self._stream(job_id, view, tally)
            if status is not None:
                return Followed(status, "sse", tally.reconnects, tally.events, tally.last_event_id)
            self.on_note(
                f"the event stream is not getting through; polling every {self.poll_interval:g} s"
            )
        status = await self._poll(job_id, view)
        return Followed(status, "poll", tally.reconnects, tally.events, tally.last_event_id)

    async def _stream(self, job_id: str, view: JobProgress, tally: _Tally) -> JobStatus | None:
        """The final status, following the stream; None once SSE is given up."""
        failures = 0
        delay = self.reconnect_delay
        while failures < self.max_stream_failures:
            try:
                async with self.transport.events(
                    events_path(job_id), tally.last_event_id
                ) as source:
                    async for sse in source.aiter_sse():
                        if sse.retry is not None:
                            delay = min(sse.retry / 1000, 30.0)
                        if not sse.data:  # the opening frame or a ping
                            continue
                        try:
                            data = decode_event(sse.event, sse.data)
                        except msgspec.DecodeError:  # a torn frame
                            continue
                        tally.last_event_id = sse.id or tally.last_event_id
                        tally.events += 1
                        failures = 0
                        if data is None:  # a newer server's event: resume after it, skip it
                            continue
                        view.apply_event(data, sse.id)
                        self.on_update(view)
                        if is_terminal_event(sse.event):
                            return await self._status(job_id)
            except ApiError as exc:
                if exc.status_code in {400, 401, 403, 404}:
                    raise
                # 429 (stream cap), 5xx, a proxy's error page: SSE is not getting through.
                return None
            except (httpx.TransportError, SSEError, Unreachable):
                pass
            # The stream ended before the job did: reconnect, resuming after the last id.
            failures += 1
            if failures < self.max_stream_failures:
                tally.reconnects += 1
                await asyncio.sleep(delay)
        return None

    async def _poll(self, job_id: str, view: JobProgress) -> JobStatus:
        silent_since: float | None = None
        while True:
            try:
                status = await self._status(job_id)
            except (Unreachable, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status_code < 500:
                    raise
                now = time.monotonic()
                silent_since = silent_since or now
                if now - silent_since > self.unreachable_after:
                    raise
                await asyncio.sleep(self.poll_interval)
                continue
            silent_since = None
            view.apply_status(status)
            self.on_update(view)
            if status.status.is_terminal:
                return status
            await asyncio.sleep(self.poll_interval)

    async def _status(self, job_id: str) -> JobStatus:
        return await self.transport.call("GET", status_path(job_id), JobStatus)
