"""The webhook outbox in Redis: deliveries due, and each job's deliveries with their outcomes.

The job store's save script (jobs.py) adds a delivery in the same atomic step that writes a
job's terminal event, so every ending of a job with a `callback_url` is delivered at least
once, whichever process ended it (worker, API cancel, sweeper). Workers then claim due
deliveries here, send them (delivery.py) and record each outcome.

| Key | Type | Meaning |
| --- | --- | --- |
| `<prefix>:webhooks:outbox` | zset | `<job_id>:<event>` -> when its next attempt is due |
| `<prefix>:job:<job_id>:webhooks` | hash | event -> WebhookDelivery JSON (TTL: the record's) |

A claim moves a due entry's score past the attempt's time limit, so a worker that dies while
sending leaves it due again later rather than lost (at-least-once); two workers never send
the same delivery at once otherwise.
"""

from __future__ import annotations

import time

import msgspec
from redis.asyncio import Redis

from backend.jobevents import is_terminal_event
from backend.models import JobRecord
from backend.webhooks.records import WebhookDelivery

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WebhookDelivery)

# KEYS: outbox. ARGV: now, claim until, most entries to claim. Returns the claimed members.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], member)
end
return due
"""


def outbox_key(prefix: str) -> str:
    return f"{prefix}:webhooks:outbox"


def deliveries_key(prefix: str, job_id: str) -> str:
    return f"{prefix}:job:{job_id}:webhooks"


def webhook_id(job_id: str, event: str) -> str:
    """The Standard Webhooks message id: one per job and terminal event, so the same on every
    retry (a receiver's idempotency key) and never reused for another message."""
    return f"msg_{job_id}_{event}"


def member(job_id: str, event: str) -> str:
    return f"{job_id}:{event}"


def new_delivery(record: JobRecord, event: str, data: str) -> WebhookDelivery | None:
    """The delivery the save script must add with `event`, or None (no callback, or an event
    that does not end the job)."""
    if not record.callback_url or not is_terminal_event(event):
        return None
    return WebhookDelivery(
        webhook_id=webhook_id(record.job_id, event),
        job_id=record.job_id,
        event=event,
        url=record.callback_url,
        data=data,
        created_at=time.time(),
    )


def encode(delivery: WebhookDelivery) -> str:
    return _encoder.encode(delivery).decode()


class Outbox:
    """Claim, read and update deliveries (the save script adds them)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._claim = redis.register_script(_CLAIM)

    async def claim(self, now: float, hold_seconds: float, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` (job_id, event) pairs due by `now`, each held for `hold_seconds`."""
        members = await self._claim(
            keys=[outbox_key(self.prefix)], args=[repr(now), repr(now + hold_seconds), limit]
        )
        pairs = []
        for raw in members:
            job_id, _, event = (raw.decode() if isinstance(raw, bytes) else raw).partition(":")
            pairs.append((job_id, event))
        return pairs

    async def get(self, job_id: str, event: str) -> WebhookDelivery | None:
        raw = await self.redis.hget(deliveries_key(self.prefix, job_id), event)  # type: ignore[misc]
        return None if raw is None else _decoder.decode(raw)

    async def of_job(self, job_id: str) -> list[WebhookDelivery]:
        """The job's deliveries, oldest first."""
        raws = await self.redis.hvals(deliveries_key(self.prefix, job_id))  # type: ignore[misc]
        return sorted((_decoder.decode(raw) for raw in raws), key=lambda d: d.created_at)

    async def record(self, delivery: WebhookDelivery) -> None:
        """Store the delivery's new state; due again at `next_attempt_at`, else done."""
        key = member(delivery.job_id, delivery.event)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                deliveries_key(self.prefix, delivery.job_id), delivery.event, encode(delivery)
            )
            if delivery.next_attempt_at is not None:
                pipe.zadd(outbox_key(self.prefix), {key: delivery.next_attempt_at})
            else:
                pipe.zrem(outbox_key(self.prefix), key)
            await pipe.execute()

    async def drop(self, job_id: str, event: str) -> None:
        """Forget an outbox entry whose delivery record is gone (expired with its job)."""
        await self.redis.zrem(outbox_key(self.prefix), member(job_id, event))
