"""The per-process hub that turns a job's Redis events into a stream for each subscriber.

One Redis pub/sub connection per process carries every live event; subscribers are in-memory
queues. History comes from the job's Redis stream, so a subscriber first registers, then reads
history, then takes live events newer than the last one it delivered: nothing can fall between
the two. When the pub/sub link drops, or a slow subscriber's queue overflows, the subscriber
re-reads the stream after its last id instead of trusting what it may have missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import AsyncIterator

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.jobevents import is_terminal_event
from backend.jobs import JobStore, LiveMessage, parse_event_id
from backend.models import JobEvent

logger = logging.getLogger(__name__)

_live_decoder = msgspec.json.Decoder(LiveMessage)
_QUEUE_LIMIT = 256


class _Subscriber:
    """A bounded mailbox for one stream; overflow turns into a request to re-read history."""

    __slots__ = ("items", "resync", "wakeup")

    def __init__(self) -> None:
        self.items: deque[JobEvent] = deque()
        self.resync = False
        self.wakeup = asyncio.Event()

    def push(self, event: JobEvent) -> None:
        if len(self.items) >= _QUEUE_LIMIT:
            self.items.clear()
            self.resync = True
        else:
            self.items.append(event)
        self.wakeup.set()

    def request_resync(self) -> None:
        self.resync = True
        self.wakeup.set()


class EventHub:
    """Fans live job events out to local subscribers over a single Redis reader."""

    def __init__(self, redis: Redis, store: JobStore) -> None:
        self._redis = redis
        self._store = store
        self._subscribers: dict[str, set[_Subscriber]] = defaultdict(set)
        self._reader: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

    async def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_forever(), name="event-hub-reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def _read_forever(self) -> None:
        delay = 0.2
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._store.channel)
                self.connected.set()
                delay = 0.2
                # Anything published while we were away is only in the streams.
                self._resync_all()
                async for message in pubsub.listen():
                    self._dispatch(message.get("data"))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.connected.clear()
                logger.warning("event hub lost Redis (%s); reconnecting in %.1fs", exc, delay)
                self._resync_all()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _dispatch(self, raw: object) -> None:
        if not isinstance(raw, bytes | str):
            return
        try:
            message = _live_decoder.decode(raw)
        except msgspec.DecodeError:
            logger.warning("ignoring malformed live event %r", raw[:200])
            return
        event = JobEvent(id=message.id, event=message.event, data=message.data)
        for subscriber in tuple(self._subscribers.get(message.job_id, ())):
            subscriber.push(event)

    def _resync_all(self) -> None:
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.request_resync()

    async def subscribe(
        self, job_id: str, last_event_id: str | None = None, idle_seconds: float = 15.0
    ) -> AsyncIterator[JobEvent | None]:
        """Yield the job's events after `last_event_id`, history first, then live.

        Yields None after `idle_seconds` without an event (the caller sends a keep-alive) and
        returns after the terminal event (jobevents.TERMINAL_EVENTS).
        """
        subscriber = _Subscriber()
        self._subscribers[job_id].add(subscriber)
        last = parse_event_id(last_event_id) if last_event_id else None
        last_text = last_event_id
        try:
            for event in await self._store.events_after(job_id, last_text):
                yield event
                last, last_text = parse_event_id(event.id), event.id
                if is_terminal_event(event.event):
                    return
            while True:
                if not subscriber.items and not subscriber.resync:
                    subscriber.wakeup.clear()
                    try:
                        async with asyncio.timeout(idle_seconds):
                            await subscriber.wakeup.wait()
                    except TimeoutError:
                        yield None
                        continue
                if subscriber.resync:
                    subscriber.resync = False
                    subscriber.items.clear()
                    backlog = await self._store.events_after(job_id, last_text)
                else:
                    backlog = [subscriber.items.popleft()]
                for event in backlog:
                    position = parse_event_id(event.id)
                    if last is not None and position is not None and position <= last:
                        continue
                    yield event
                    last, last_text = position, event.id
                    if is_terminal_event(event.event):
                        return
        finally:
            subscribers = self._subscribers.get(job_id)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._subscribers[job_id]
