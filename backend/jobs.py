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
from typing import Any, NamedTuple

import msgspec
from redis.asyncio import Redis

from backend.jobevents import JobEventData, ended_event, progress_event
from backend.models import TERMINAL_STATES, JobEvent, JobRecord, JobState
from backend.webhooks import outbox

# Clients retry for minutes, not days; a day covers any sane retry policy.
IDEMPOTENCY_TTL_SECONDS = 24 * 3600

# ASCII digits only (\d would take any script's), each part an unsigned 64-bit integer as Redis
# stream ids are.
_STREAM_ID = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})$")
_MAX_STREAM_ID_PART = 2**64 - 1

# KEYS: record, stream, owner index, expiry index, index of all jobs (for /ops), the client's
# active jobs (a ZSET: job id -> when its record expires), and on create: the Idempotency-Key's
# binding, arq's job record, arq's result key, the queue (zset).
# ARGV: record json, status, event, data, ttl, channel, job id, mode ("create", "update" or
# "expire"), created_at score, archive expiry time ("" for none), client ("" when the job counts
# against nobody's quota), the client's cap on active jobs ("" for none; read on create), and
# on create: the binding "fingerprint:job_id" ("" without a key), its TTL, arq's job payload
# ("" to leave the job unqueued), its queue score (epoch ms), its record's TTL (ms).
# Webhooks (webhooks/outbox.py): KEYS[11] the outbox, KEYS[12] the job's deliveries; ARGV[18]
# the delivery this event starts ("" for none), ARGV[19] its outbox member, ARGV[20] when it
# is due.
# Returns the new stream id, "" when no event was asked for, false when refused, -1 when the
# client's active jobs already fill its cap, -2 when arq already knows a job of this id, or
# {"bound", "fingerprint:job_id"} when the Idempotency-Key is bound already; in each refusal
# nothing is written.
_SAVE_AND_EMIT = (
    # The set of terminal states comes from JobState, so Lua and Python cannot drift apart.
    "local TERMINAL = {"
    + ", ".join(f"['{state.value}'] = true" for state in sorted(TERMINAL_STATES))
    + "}\n"
    + """
local creating = ARGV[8] == 'create'
if creating and ARGV[13] ~= '' then
  local bound = redis.call('GET', KEYS[7])
  if bound then return {'bound', bound} end
end
local current = redis.call('GET', KEYS[1])
if creating then
  if current then return false end
  -- What arq's enqueue_job checks: a job of this id queued, running or keeping its result.
  if ARGV[15] ~= '' and redis.call('EXISTS', KEYS[8], KEYS[9]) > 0 then return -2 end
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
local now = 0
if ARGV[11] ~= '' then
  -- Redis's clock: the one that expires the records this set mirrors.
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
  if ARGV[8] == 'create' then
    -- A record that expired without ending (never picked up, its queue lost) frees its place.
    redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
    if ARGV[12] ~= '' and redis.call('ZCARD', KEYS[6]) >= tonumber(ARGV[12]) then
      return -1
    end
  end
end
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
  -- Trimmed like the index of all jobs: an entry lives no longer than its record.
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[9]) - ttl)
  redis.call('ZADD', KEYS[5], ARGV[9], ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[9]) - ttl)
end
if ARGV[2] == 'ready' and ARGV[10] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[10], ARGV[7])
elseif ARGV[8] == 'expire' then
  redis.call('ZREM', KEYS[4], ARGV[7])
end
if creating and ARGV[13] ~= '' then
  redis.call('SET', KEYS[7], ARGV[13], 'EX', ARGV[14])
end
if creating and ARGV[15] ~= '' then
  -- arq's enqueue_job, written the way arq reads it: the pickled call, then the queue entry.
  redis.call('PSETEX', KEYS[8], ARGV[17], ARGV[15])
  redis.call('ZADD', KEYS[10], ARGV[16], ARGV[7])
end
if ARGV[11] ~= '' then
  if TERMINAL[ARGV[2]] then
    redis.call('ZREM', KEYS[6], ARGV[7])
  else
    -- Scored with the record's expiry and renewed with it, so only a vanished record lapses.
    redis.call('ZADD', KEYS[6], now + ttl, ARGV[7])
    redis.call('EXPIRE', KEYS[6], ttl)
  end
end
if ARGV[18] ~= '' then
  -- Written with the terminal event, or not at all: no ending goes unannounced.
  redis.call('HSET', KEYS[12], ARGV[3], ARGV[18])
  redis.call('EXPIRE', KEYS[12], ttl)
  redis.call('ZADD', KEYS[11], ARGV[20], ARGV[19])
end
return id
"""
)

_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(JobRecord)


class ActiveJobsLimit(Exception):
    """The client's active jobs already fill its cap; the job was not created."""

    def __init__(self, client: str, limit: int) -> None:
        super().__init__(f"{client} already has {limit} active jobs")
        self.client = client
        self.limit = limit


class AlreadyQueued(Exception):
    """arq already knows a job of this id (queued, running or keeping its result)."""


class IdempotencyBound(Exception):
    """The Idempotency-Key is bound already (to `job_id`, by a request with `fingerprint`)."""

    def __init__(self, job_id: str, fingerprint: str) -> None:
        super().__init__(f"Idempotency-Key bound to job {job_id}")
        self.job_id = job_id
        self.fingerprint = fingerprint


class IdempotencyClaim(NamedTuple):
    """Bind an Idempotency-Key of `scope` to the job being created, unless it is bound."""

    scope: str
    key: str
    fingerprint: str


class QueueEntry(NamedTuple):
    """arq's two writes that queue a job (made by queue.queue_entry), for the create script.

    `payload` is arq's serialized call, `score_ms` when it is due (epoch ms), `expires_ms`
    the TTL of arq's job record.
    """

    job_key: str
    result_key: str
    queue_key: str
    payload: bytes
    score_ms: int
    expires_ms: int


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
    ms, seq = int(match.group(1)), int(match.group(2))
    if ms > _MAX_STREAM_ID_PART or seq > _MAX_STREAM_ID_PART:
        return None
    return ms, seq


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
        return await self._run(record, "expire", ended_event(record))

    async def due_for_expiry(self, now: float, limit: int = 100) -> list[str]:
        """Ids of ready jobs whose archives are past their time."""
        job_ids = await self.redis.zrangebyscore(self.expiry_key, "-inf", now, start=0, num=limit)
        return [_text(j) for j in job_ids]

    async def forget_expiry(self, job_id: str) -> None:
        await self.redis.zrem(self.expiry_key, job_id)

    def active_key(self, client: str) -> str:
        """The client's queued and running jobs, kept by the save script (see _SAVE_AND_EMIT)."""
        return f"{self.prefix}:client:{client}:active"

    def record_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def stream_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    def owner_key(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}:jobs"

    async def create(
        self,
        record: JobRecord,
        active_limit: int | None = None,
        *,
        idempotency: IdempotencyClaim | None = None,
        queue_entry: QueueEntry | None = None,
    ) -> None:
        """Store a new record and its first `progress` event (status queued), in one script.

        A record with a `client` holds a place among that client's active jobs until it ends
        (or its record expires). With `active_limit`, checking for a free place and taking it
        are one atomic step that costs the same at any number of jobs. With `idempotency`, the
        key is bound to this job in the same step; with `queue_entry`, the job is queued in it
        too. So a POST is one round trip, and no crash between steps can leave a key without a
        job or a job without its queue entry.

        Raises, having written nothing: ActiveJobsLimit (no free place), IdempotencyBound (the
        key is bound already: replay or conflict, the caller's to tell), AlreadyQueued.
        """
        if not record.created_at:
            record.created_at = time.time()
        await self._run(
            record,
            "create",
            progress_event(record),
            active_limit,
            idempotency=idempotency,
            queue_entry=queue_entry,
        )

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.get(self.record_key(job_id))
        return None if raw is None else _record_decoder.decode(raw)

    async def save(self, record: JobRecord, event: JobEventData | None = None) -> str | None:
        """Write the record and append `event` (if any) in one step, named by `event.name`.

        Returns the event's id ("" without an event), or None when the job is already in a
        terminal state (or gone) and so was left untouched.
        """
        return await self._run(record, "update", event)

    async def save_progress(self, record: JobRecord) -> str | None:
        return await self.save(record, progress_event(record))

    async def events_after(
        self, job_id: str, last_id: str | None = None, count: int | None = None
    ) -> list[JobEvent]:
        """Events strictly after `last_id` (all of them when None), oldest first."""
        start = "-" if not last_id else f"({last_id}"
        entries = await self.redis.xrange(self.stream_key(job_id), min=start, max="+", count=count)
        return [_event_from_entry(entry_id, fields) for entry_id, fields in entries]

    async def first_and_last_events(self, job_id: str) -> tuple[JobEvent, JobEvent] | None:
        """The job's first and last events, read together; None when it has none."""
        key = self.stream_key(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xrange(key, count=1)
            pipe.xrevrange(key, count=1)
            first, last = await pipe.execute()
        if not first or not last:
            return None
        return _event_from_entry(*first[0]), _event_from_entry(*last[0])

    def _idempotency_key(self, scope: str, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return f"{self.prefix}:idempotency:{scope}:{digest}"

    async def jobs_of(self, owner: str, limit: int = 50, offset: int = 0) -> list[JobRecord]:
        """The owner's jobs from the `offset`-th most recent, newest first, at most `limit`,
        skipping records that have expired."""
        job_ids = await self.redis.zrevrange(self.owner_key(owner), offset, offset + limit - 1)
        if not job_ids:
            return []
        raws = await self.redis.mget([self.record_key(_text(j)) for j in job_ids])
        return [_record_decoder.decode(raw) for raw in raws if raw is not None]

    async def count_jobs_of(self, owner: str) -> int:
        """How many jobs the owner's list holds (expired records included until cleared)."""
        return int(await self.redis.zcard(self.owner_key(owner)))

    async def forget_ended(self, owner: str, batch: int = 500) -> int:
        """Take the owner's ended (and expired-away) jobs off the owner's list; how many.

        Only the list changes: records, archives and other owners' lists are left alone, so
        a job id still answers on the API until its record expires. A job that has ended can
        never run again (the save script refuses), so removing it cannot lose a running one.
        """
        key = self.owner_key(owner)
        removed = 0
        start = 0
        while job_ids := [_text(j) for j in await self.redis.zrange(key, start, start + batch - 1)]:
            raws = await self.redis.mget([self.record_key(j) for j in job_ids])
            ended = [
                job_id
                for job_id, raw in zip(job_ids, raws, strict=True)
                if raw is None or _record_decoder.decode(raw).status in TERMINAL_STATES
            ]
            if ended:
                removed += int(await self.redis.zrem(key, *ended))
            start += len(job_ids) - len(ended)
        return removed

    async def owner_index_before(
        self, owner: str, before: tuple[float, str] | None, count: int
    ) -> list[tuple[str, float]]:
        """Up to `count` (job id, created_at) of the owner's index, newest first, strictly
        after `before` in that order (created_at descending, then job id descending).

        Entries whose records have expired may still be listed (the index is trimmed as
        jobs are created); read the records to skip them.
        """
        key = self.owner_key(owner)
        if before is None:
            entries = await self.redis.zrevrangebyscore(
                key, "+inf", "-inf", start=0, num=count, withscores=True
            )
            return [(_text(j), float(s)) for j, s in entries]
        score, job_id = before
        # Jobs created in the same instant share a score; Redis orders them by id, so read
        # them all and keep those past the cursor's id (ties are rare and few).
        ties = await self.redis.zcount(key, score, score)
        entries = await self.redis.zrevrangebyscore(
            key, score, "-inf", start=0, num=count + ties, withscores=True
        )
        found = [(_text(j), float(s)) for j, s in entries]
        return [(j, s) for j, s in found if s < score or j < job_id][:count]

    async def records(self, job_ids: list[str]) -> list[JobRecord | None]:
        """The records of `job_ids`, in order; None where a record has expired."""
        if not job_ids:
            return []
        raws = await self.redis.mget([self.record_key(j) for j in job_ids])
        return [None if raw is None else _record_decoder.decode(raw) for raw in raws]

    async def _run(
        self,
        record: JobRecord,
        mode: str,
        event: JobEventData | None,
        active_limit: int | None = None,
        *,
        idempotency: IdempotencyClaim | None = None,
        queue_entry: QueueEntry | None = None,
    ) -> str | None:
        fingerprint = idempotency.fingerprint if idempotency else ""
        entry = queue_entry
        data = "" if event is None else _encoder.encode(event).decode()
        delivery = None if event is None else outbox.new_delivery(record, event.name.value, data)
        result = await self._script(
            keys=[
                self.record_key(record.job_id),
                self.stream_key(record.job_id),
                self.owner_key(record.owner),
                self.expiry_key,
                self.index_key,
                self.active_key(record.client),
                self._idempotency_key(idempotency.scope, idempotency.key)
                if idempotency
                else self.record_key(record.job_id),
                entry.job_key if entry else self.record_key(record.job_id),
                entry.result_key if entry else self.record_key(record.job_id),
                entry.queue_key if entry else self.record_key(record.job_id),
                outbox.outbox_key(self.prefix),
                outbox.deliveries_key(self.prefix, record.job_id),
            ],
            args=[
                _encoder.encode(record),
                record.status.value,
                "" if event is None else event.name.value,
                data,
                self.ttl_seconds,
                self.channel,
                record.job_id,
                mode,
                repr(record.created_at),
                repr(record.archive_expires_at) if record.archive_expires_at else "",
                record.client,
                "" if active_limit is None else active_limit,
                f"{fingerprint}:{record.job_id}" if idempotency else "",
                IDEMPOTENCY_TTL_SECONDS,
                entry.payload if entry else "",
                entry.score_ms if entry else 0,
                entry.expires_ms if entry else 0,
                "" if delivery is None else outbox.encode(delivery),
                "" if delivery is None else outbox.member(record.job_id, delivery.event),
                "" if delivery is None else repr(delivery.created_at),
            ],
        )
        if isinstance(result, list):
            job_id, bound_fingerprint = _binding(_text(result[1]))
            raise IdempotencyBound(job_id, bound_fingerprint)
        if result == -1:
            raise ActiveJobsLimit(record.client, active_limit or 0)
        if result == -2:
            raise AlreadyQueued(record.job_id)
        if result is None or result is False or result == 0:
            return None
        return _text(result)


def _binding(value: str) -> tuple[str, str]:
    """(job_id, fingerprint) of a stored binding "fingerprint:job_id"."""
    fingerprint, _, job_id = value.partition(":")
    return job_id, fingerprint


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _event_from_entry(entry_id: bytes | str, fields: dict[Any, Any]) -> JobEvent:
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    return JobEvent(
        id=_text(entry_id), event=decoded.get("event", "message"), data=decoded.get("data", "{}")
    )
