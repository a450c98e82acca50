"""The job store: the only code that talks to Redis about jobs.

A job is a JSON record plus a Redis stream of its events. Every change to a record and the event
that announces it are written by one Lua script, so the record, the stream and the live
notification can never disagree, and a job that reached a terminal state can never leave it
(a late progress write from a worker after a cancel is refused, which is how the worker learns).
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import msgspec
from redis.asyncio import Redis

from backend.models import TERMINAL_STATES, JobEvent, JobRecord, JobState

TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled", "expired"})

# Clients retry for minutes, not days; a day covers any sane retry policy.
IDEMPOTENCY_TTL_SECONDS = 24 * 3600

_STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")

# KEYS: record, stream, owner index, expiry index, index of all jobs (for /ops).
# ARGV: record json, status, event, data, ttl, channel, job id, mode ("create", "update" or
# "expire"), created_at score, archive expiry time ("" for none).
# Returns the new stream id, "" when no event was asked for, or false when refused.
_SAVE_AND_EMIT = (
    # The set of terminal states comes from JobState, so Lua and Python cannot drift apart.
    "local TERMINAL = {"
    + ", ".join(f"['{state.value}'] = true" for state in sorted(TERMINAL_STATES))
    + "}\n"
    + """
local current = redis.call('GET', KEYS[1])
if ARGV[8] == 'create' then
  if current then return false end
else
  if not current then return false end
  local status = cjson.decode(current)['status']
  if ARGV[8] == 'expire' then
    if status ~= 'ready' then return false end
  elseif TERMINAL[status] then
    return false
  end
end
local ttl = tonumber(ARGV[5])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
local id = ''
if ARGV[3] ~= '' then
  id = redis.call('XADD', KEYS[2], '*', 'event', ARGV[3], 'data', ARGV[4])
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('PUBLISH', ARGV[6], cjson.encode({job_id = ARGV[7], id = id, event = ARGV[3],
                                                data = ARGV[4]}))
end
if ARGV[8] == 'create' then
  redis.call('ZADD', KEYS[3], ARGV[9], ARGV[7])
  redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('ZADD', KEYS[5], ARGV[9], ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[9]) - ttl)
end
if ARGV[2] == 'ready' and ARGV[10] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[10], ARGV[7])
elseif ARGV[8] == 'expire' then
  redis.call('ZREM', KEYS[4], ARGV[7])
end
return id
"""
)

_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(JobRecord)


class LiveMessage(msgspec.Struct, frozen=True):
    """What the store publishes on the events channel for every new event."""

    job_id: str
    id: str
    event: str
    data: str


def parse_event_id(value: str) -> tuple[int, int] | None:
    """The (ms, seq) of a stream id such as `1700000000000-0`, or None if it is not one."""
    match = _STREAM_ID.match(value.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def progress_payload(record: JobRecord) -> dict[str, Any]:
    """The data of a `progress` event: everything a progress bar needs."""
    return {
        "status": record.status.value,
        "progress": record.progress,
        "processed_files": record.processed_files,
        "total_files": record.total_files,
        "bytes_processed": record.bytes_processed,
        "bytes_total": record.bytes_total,
        "attempt": record.attempt,
        "max_attempts": record.max_attempts,
    }


class JobStore:
    """Create, read and change job records and their event streams in Redis."""

    def __init__(self, redis: Redis, *, prefix: str = "longhaul", ttl_seconds: int = 604800):
        self.redis = redis
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.channel = f"{prefix}:events"
        self._script = redis.register_script(_SAVE_AND_EMIT)

    @property
    def expiry_key(self) -> str:
        return f"{self.prefix}:expiry"

    @property
    def index_key(self) -> str:
        """Every job id by creation time, kept as long as the records (read by ops.py)."""
        return f"{self.prefix}:jobs"

    async def expire(self, record: JobRecord) -> str | None:
        """Move a `ready` job to `expired` (its archive is gone); None if it was not ready."""
        record.status = JobState.EXPIRED
        return await self._run(record, "expire", "expired", {"status": "expired"})

    async def due_for_expiry(self, now: float, limit: int = 100) -> list[str]:
        """Ids of ready jobs whose archives are past their time."""
        job_ids = await self.redis.zrangebyscore(self.expiry_key, "-inf", now, start=0, num=limit)
        return [_text(j) for j in job_ids]

    async def forget_expiry(self, job_id: str) -> None:
        await self.redis.zrem(self.expiry_key, job_id)

    def active_key(self, client: str) -> str:
        return f"{self.prefix}:client:{client}:active"

    def record_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def stream_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    def owner_key(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}:jobs"

    async def create(self, record: JobRecord) -> None:
        """Store a new record and its first `progress` event (status queued)."""
        if not record.created_at:
            record.created_at = time.time()
        await self._run(record, "create", "progress", progress_payload(record))

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.get(self.record_key(job_id))
        return None if raw is None else _record_decoder.decode(raw)

    async def save(
        self, record: JobRecord, event: str = "", data: dict[str, Any] | None = None
    ) -> str | None:
        """Write the record and append `event` (if any) in one step.

        Returns the event's id ("" without an event), or None when the job is already in a
        terminal state (or gone) and so was left untouched.
        """
        return await self._run(record, "update", event, data or {})

    async def save_progress(self, record: JobRecord) -> str | None:
        return await self.save(record, "progress", progress_payload(record))

    async def events_after(
        self, job_id: str, last_id: str | None = None, count: int | None = None
    ) -> list[JobEvent]:
        """Events strictly after `last_id` (all of them when None), oldest first."""
        start = "-" if not last_id else f"({last_id}"
        entries = await self.redis.xrange(self.stream_key(job_id), min=start, max="+", count=count)
        return [_event_from_entry(entry_id, fields) for entry_id, fields in entries]

    async def claim_idempotency_key(
        self, owner: str, key: str, fingerprint: str, job_id: str
    ) -> tuple[str, str]:
        """Bind the owner's `key` to `job_id` unless it is bound already.

        Returns the (job_id, fingerprint) the key is bound to: ours if we won, else the first.
        """
        digest = hashlib.sha256(key.encode()).hexdigest()
        redis_key = f"{self.prefix}:idempotency:{owner}:{digest}"
        claimed = await self.redis.set(
            redis_key, f"{fingerprint}:{job_id}", nx=True, ex=IDEMPOTENCY_TTL_SECONDS
        )
        if claimed:
            return job_id, fingerprint
        existing = _text(await self.redis.get(redis_key) or f"{fingerprint}:{job_id}")
        bound_fingerprint, _, bound_job = existing.partition(":")
        return bound_job, bound_fingerprint

    async def count_active(self, client: str) -> int:
        """How many of `client`'s jobs are queued or running (ended ones are pruned)."""
        key = self.active_key(client)
        job_ids = [_text(j) for j in await self.redis.zrange(key, 0, -1)]
        if not job_ids:
            return 0
        raws = await self.redis.mget([self.record_key(j) for j in job_ids])
        ended = [
            job_id
            for job_id, raw in zip(job_ids, raws, strict=True)
            if raw is None or _record_decoder.decode(raw).status.is_terminal
        ]
        if ended:
            await self.redis.zrem(key, *ended)
        return len(job_ids) - len(ended)

    async def note_active(self, client: str, job_id: str) -> None:
        key = self.active_key(client)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {job_id: time.time()})
            pipe.expire(key, self.ttl_seconds)
            await pipe.execute()

    async def jobs_of(self, owner: str, limit: int = 50) -> list[JobRecord]:
        """The owner's most recent jobs, newest first, skipping records that have expired."""
        job_ids = await self.redis.zrevrange(self.owner_key(owner), 0, limit - 1)
        if not job_ids:
            return []
        raws = await self.redis.mget([self.record_key(_text(j)) for j in job_ids])
        return [_record_decoder.decode(raw) for raw in raws if raw is not None]

    async def _run(
        self, record: JobRecord, mode: str, event: str, data: dict[str, Any]
    ) -> str | None:
        result = await self._script(
            keys=[
                self.record_key(record.job_id),
                self.stream_key(record.job_id),
                self.owner_key(record.owner),
                self.expiry_key,
                self.index_key,
            ],
            args=[
                _encoder.encode(record),
                record.status.value,
                event,
                _encoder.encode(data).decode() if event else "",
                self.ttl_seconds,
                self.channel,
                record.job_id,
                mode,
                repr(record.created_at),
                repr(record.archive_expires_at) if record.archive_expires_at else "",
            ],
        )
        if result is None or result is False or result == 0:
            return None
        return _text(result)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _event_from_entry(entry_id: bytes | str, fields: dict[Any, Any]) -> JobEvent:
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    return JobEvent(
        id=_text(entry_id), event=decoded.get("event", "message"), data=decoded.get("data", "{}")
    )


def is_terminal_event(event: str) -> bool:
    return event in TERMINAL_EVENTS


def terminal_event_for(state: JobState) -> str:
    return {
        JobState.READY: "completed",
        JobState.FAILED: "failed",
        JobState.CANCELLED: "cancelled",
        JobState.EXPIRED: "expired",
    }[state]
