"""Job leases: a running attempt holds its job for JOB_LEASE_SECONDS and keeps renewing it.

arq marks a running job with its in-progress key, whose TTL is the job timeout + 10 s: a worker
that dies (SIGKILL, OOM, a lost node) leaves the key behind, and no worker starts the job again
until it lapses, ten minutes at the default timeout; a Redis restart keeps the key in the AOF.
Here the key is a lease instead (the same idea as BullMQ's job lock):

- the worker gives the key a TTL of one lease (`create_worker` sets arq's in-progress TTL);
- the attempt writes its own holder token into the key and renews it every third of a lease;
- a dead worker stops renewing, so within one lease the key is gone and the next poll of any
  worker starts the job again (arq counts it as a new try, which is what `job_try` reports);
- an attempt that cannot renew for a whole lease (Redis unreachable) cancels itself, because
  another worker may by then hold the job: two attempts never go on writing side by side;
- a stuck but alive attempt keeps its lease and is ended by the job timeout, as before.

The lease table (`<prefix>:leases`, job id -> lease expiry in epoch seconds) is written with
every renewal, so any process finds the jobs whose worker was lost with one ZRANGEBYSCORE;
`watch_lapsed` turns each into one `stalled` event ("waiting for a worker").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.jobevents import JobEventData, stalled_event
from backend.jobs import JobStore
from backend.models import JobRecord, JobState
from backend.queue import in_progress_key

logger = logging.getLogger(__name__)

# KEYS: arq's in-progress key of the job, the lease table.
# ARGV: holder token, lease in ms, job id, lease expiry (epoch seconds), mode: "take" right
# after arq started the job (its key holds arq's own marker), "renew" after that.
# Returns 1 while the caller holds the lease, 0 once another attempt holds the job.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if ARGV[5] == 'renew' and holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return 1
"""

# KEYS: arq's in-progress key of the job, the lease table. ARGV: holder token, job id.
# The in-progress key itself is arq's to delete when it finishes the job.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 1
"""


def lease_table_key(prefix: str) -> str:
    return f"{prefix}:leases"


class LeaseLost(Exception):
    """The attempt no longer holds its job: it must stop without writing anything."""


class Lease:
    """One attempt's hold on one job. Use `held()` around the attempt.

    `tokens` is the worker's table of the leases its attempts hold (LeasedWorker reads it).
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        job_id: str,
        seconds: float,
        tokens: dict[str, str] | None = None,
    ) -> None:
        self.redis = redis
        self.job_id = job_id
        self.seconds = seconds
        self.token = secrets.token_hex(12)
        self.lost = False
        self.tokens = {} if tokens is None else tokens
        self._renewed_at = time.monotonic()
        self._stopping = False
        self._keys = [in_progress_key(job_id), lease_table_key(prefix)]
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def renew(self, mode: str = "renew") -> bool:
        """Extend the lease by `seconds` from now; False once another attempt holds the job.

        `mode="take"` claims it whoever marked it: only right after arq started the job,
        which arq does for one worker at a time.
        """
        # The lease runs from when this was sent, not from when the answer came back: a
        # process frozen in between must not count the frozen time as held.
        sent = time.monotonic()
        expiry = time.time() + self.seconds
        args: list[str | int] = [
            self.token,
            int(self.seconds * 1000),
            self.job_id,
            repr(expiry),
            mode,
        ]
        held = bool(await self._renew(keys=self._keys, args=args))
        if held:
            self._renewed_at = sent
        return held

    def ensure_held(self) -> None:
        """Raise LeaseLost unless the lease was renewed less than a lease ago.

        Checked before every write of the job's record: an attempt that was frozen (a paused
        VM, a stopped process) for longer than its lease wakes up here and stops, instead of
        writing over the progress of the attempt that took the job meanwhile.
        """
        if self.lost or time.monotonic() - self._renewed_at >= self.seconds:
            self.lost = True
            raise LeaseLost(self.job_id)

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[Lease]:
        """Hold the lease while the body runs; cancel the body if the lease is lost.

        Raises CancelledError out of the body when the lease could not be kept (then `lost`
        is True); the job is then another attempt's, or will be.
        """
        taken = False
        self.tokens[self.job_id] = self.token
        with contextlib.suppress(RedisError, OSError):
            # arq has just marked the job for this worker alone.
            taken = await self.renew("take")
        attempt = asyncio.current_task()
        keeper = asyncio.create_task(self._keep(attempt, taken), name=f"lease-{self.job_id}")
        try:
            yield self
        finally:
            # A cancel that lands inside a Redis call can be swallowed (seen after a process
            # was frozen and woken: the keeper went on renewing a lease nobody used, and the
            # attempt waited on it forever). So the keeper also stops on `_stopping`, and it
            # is never waited for without a bound.
            self._stopping = True
            keeper.cancel()
            await asyncio.wait({keeper}, timeout=self.seconds / 3 + 1)
            with contextlib.suppress(RedisError, OSError):
                await self._release(keys=self._keys, args=[self.token, self.job_id])

    async def _keep(self, attempt: asyncio.Task[Any] | None, taken: bool) -> None:
        interval = self.seconds / 3
        while True:
            await asyncio.sleep(interval)
            if self._stopping:
                return
            try:
                if await self.renew("renew" if taken else "take"):
                    taken = True
                    continue
                reason = "another attempt holds the job"
            except (RedisError, OSError) as exc:
                if time.monotonic() - self._renewed_at < self.seconds - interval:
                    logger.warning("could not renew the lease of job %s: %s", self.job_id, exc)
                    continue
                reason = f"Redis unreachable for a whole lease ({exc})"
            logger.warning("job %s lost its lease (%s); stopping this attempt", self.job_id, reason)
            self.lost = True
            if attempt is not None:
                attempt.cancel()
            return


class FencedJobStore(JobStore):
    """The job store as one attempt sees it: no write once its lease may have lapsed."""

    def __init__(self, store: JobStore, lease: Lease) -> None:
        super().__init__(store.redis, prefix=store.prefix, ttl_seconds=store.ttl_seconds)
        self.lease = lease

    async def save(self, record: JobRecord, event: JobEventData | None = None) -> str | None:
        self.lease.ensure_held()
        return await super().save(record, event)


async def lapsed(redis: Redis, prefix: str, now: float | None = None) -> list[str]:
    """Ids of jobs whose lease ran out without being released: their worker was lost."""
    stamp = time.time() if now is None else now
    ids = await redis.zrangebyscore(lease_table_key(prefix), "-inf", stamp)
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


async def mark_stalled(store: JobStore, job_id: str) -> bool:
    """Say once that `job_id` waits for a worker; True if this call said it.

    Several processes watch; removing the job from the lease table is the claim, so exactly
    one of them writes the `stalled` event.
    """
    if not await store.redis.zrem(lease_table_key(store.prefix), job_id):
        return False
    record = await store.get(job_id)
    if record is None or record.status is not JobState.PROCESSING or record.waiting_to_retry:
        return False
    record.stalled_at = time.time()
    return await store.save(record, stalled_event(record)) is not None


async def watch_lapsed(store: JobStore, interval: float) -> None:
    """Forever: every `interval` seconds, announce jobs whose worker was lost."""
    while True:
        try:
            for job_id in await lapsed(store.redis, store.prefix):
                if await mark_stalled(store, job_id):
                    logger.warning("job %s lost its worker; waiting for another", job_id)
        except (RedisError, OSError) as exc:
            logger.debug("lease watch skipped a round: %s", exc)
        await asyncio.sleep(interval)
