"""The queue: the one module that knows arq, its Redis keys and the format of its records.

Everything else asks this module to enqueue a job, to abort one, to count the queue and the
live workers, and to build a worker; nothing else imports arq.

Redis keys of the queue (arq 0.28 names most of them itself, in `arq.constants`):

| Key | Type | Written by | Meaning |
| --- | --- | --- | --- |
| `<QUEUE_NAME>` | zset | enqueue, arq | job id -> when it is due (epoch ms); deferred retries too |
| `arq:job:<job_id>` | string | enqueue | the queued call (function name, args, try count) |
| `arq:in-progress:<job_id>` | string | arq, leases.py | a running job's marker, TTL one lease |
| `arq:retry:<job_id>` | string | arq | tries so far of a job arq re-queued |
| `arq:result:<job_id>` | string | arq | a finished job's result, kept `keep_result` seconds |
| `arq:abort` | zset | request_abort | job id -> when its abort was asked (epoch ms) |
| `<QUEUE_NAME>:worker:<host>:<pid>` | string | arq | a worker's heartbeat (format below) |

The `arq:` keys are not per queue: several Longhaul stacks on one Redis share them, which is
safe because job ids are uuid4s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import time
from typing import Any

from arq import Retry
from arq.connections import ArqRedis
from arq.constants import (
    abort_jobs_ss,
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.cron import CronJob, cron
from arq.jobs import serialize_job
from arq.utils import to_ms
from arq.worker import Function, Worker, func
from redis.asyncio import Redis

from backend import redisconn
from backend.jobs import QueueEntry
from backend.settings import Settings

__all__ = [
    "ABORT_SET",
    "BUILD_ARCHIVE",
    "HEARTBEAT_SECONDS",
    "CronJob",
    "Function",
    "LeasedWorker",
    "QueueRedis",
    "Retry",
    "Worker",
    "cron",
    "depth",
    "enqueue",
    "func",
    "heartbeat_key",
    "heartbeat_pattern",
    "in_progress_key",
    "job_key",
    "jobs_ongoing",
    "leased_worker",
    "live_workers",
    "queue_entry",
    "queue_key",
    "request_abort",
    "waiting",
    "waiting_ahead",
    "worker_redis",
]

logger = logging.getLogger(__name__)

# The Redis client every process shares (Services.redis): redis-py's, plus arq's enqueue_job.
QueueRedis = ArqRedis

# The job function a worker runs for a kind of job: the name arq stores in the job's record.
BUILD_ARCHIVE = "build_archive"
ABORT_SET = abort_jobs_ss
# A worker rewrites its heartbeat this often; arq lets it expire one second later.
HEARTBEAT_SECONDS = 5
# How many due queue entries `waiting` checks for a running job (far more than ever run at once).
WAITING_SCAN_LIMIT = 10_000

# arq's heartbeat value (Worker.record_health), one line of `key=count` fields:
#   "Nov-29 14:03:07 j_complete=12 j_failed=1 j_retried=3 j_ongoing=2 queued=0"
# j_complete / j_failed / j_retried count this worker's jobs since it started, j_ongoing the
# jobs it runs right now (cron runs included), queued the whole queue's length at that moment.
_ONGOING = re.compile(r"j_ongoing=(\d+)")

# KEYS: in-progress, queue. ARGV: job id, now (epoch ms), in-progress TTL (ms). The job's
# queue score once it is marked in progress for this worker; false when it runs elsewhere,
# left the queue, or is not due yet. arq 0.28's Worker.start_jobs makes the same checks and
# write with WATCH, EXISTS, ZSCORE and MULTI/PSETEX/EXEC: four round trips per job.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return score
"""
# KEYS: in-progress, result, retry, job, abort set, queue. ARGV: job id, lease token ('' = no
# check), finish ('1'/'0'), result ('' = none), result TTL ms ('' = none), score increment
# ('' = none), keep-in-progress ms ('' = delete the key). arq 0.28's Worker.finish_job writes,
# done only while the in-progress key still holds this run's lease token; 0 when it does not.
_FINISH = """
if ARGV[2] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
local dels = {}
if ARGV[7] == '' then dels[#dels + 1] = KEYS[1] else redis.call('PEXPIRE', KEYS[1], ARGV[7]) end
if ARGV[3] == '1' then
  if ARGV[4] ~= '' then
    if ARGV[5] == '' then redis.call('SET', KEYS[2], ARGV[4])
    else redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5]) end
  end
  dels[#dels + 1] = KEYS[3]
  dels[#dels + 1] = KEYS[4]
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[6], ARGV[1])
elseif ARGV[6] ~= '' then
  redis.call('ZINCRBY', KEYS[6], ARGV[6], ARGV[1])
end
if #dels > 0 then redis.call('DEL', unpack(dels)) end
return 1
"""


def queue_key(settings: Settings) -> str:
    """The queue's sorted set: job id -> when it is due (epoch ms)."""
    return settings.queue_name


def job_key(job_id: str) -> str:
    """arq's record of a queued job (function, arguments, enqueue time)."""
    return job_key_prefix + job_id


def in_progress_key(job_id: str) -> str:
    """arq's marker of a running job (arq.constants); its TTL is our lease."""
    return in_progress_key_prefix + job_id


def heartbeat_key(settings: Settings, host: str | None = None, pid: int | None = None) -> str:
    """This process's heartbeat key (arq's health-check key): `<queue>:worker:<host>:<pid>`."""
    host = socket.gethostname() if host is None else host
    pid = os.getpid() if pid is None else pid
    return f"{settings.queue_name}:worker:{host}:{pid}"


def heartbeat_pattern(settings: Settings, host: str = "*") -> str:
    """A SCAN pattern matching the heartbeat key of every worker on `host` (any host: `*`)."""
    return f"{settings.queue_name}:worker:{host}:*"


def jobs_ongoing(heartbeat: bytes | str | None) -> int:
    """The jobs a worker's heartbeat says it runs (`j_ongoing`); 0 if it says nothing."""
    text = heartbeat.decode() if isinstance(heartbeat, bytes) else str(heartbeat or "")
    match = _ONGOING.search(text)
    return int(match.group(1)) if match else 0


def queue_entry(settings: Settings, job_id: str, kind: str = BUILD_ARCHIVE) -> QueueEntry:
    """What arq's `enqueue_job(kind, job_id, _job_id=job_id)` writes, for the job store's create
    script to write atomically with the job's record (one round trip per POST).

    Same keys, same pickled call (arq.jobs.serialize_job), same TTL (arq's default one day), so
    an arq worker cannot tell it from enqueue_job's; tests/test_queue.py has one run it.
    """
    now_ms = int(time.time() * 1000)
    return QueueEntry(
        job_key=job_key(job_id),
        result_key=result_key_prefix + job_id,
        queue_key=queue_key(settings),
        payload=serialize_job(kind, (job_id,), {}, None, now_ms),
        score_ms=now_ms,
        expires_ms=expires_extra_ms,
    )


async def enqueue(
    redis: QueueRedis, settings: Settings, job_id: str, kind: str = BUILD_ARCHIVE
) -> bool:
    """Queue job `job_id` of `kind`, due now; False if a job of that id is already queued,
    running or keeps its result (arq then queues nothing)."""
    job = await redis.enqueue_job(kind, job_id, _job_id=job_id, _queue_name=queue_key(settings))
    return job is not None


async def request_abort(redis: Redis, job_id: str) -> None:
    """Ask whichever worker runs `job_id` to cancel its task, at that worker's next poll; a job
    not started yet is dropped unrun when a worker picks it up (arq's abort set)."""
    await redis.zadd(ABORT_SET, {job_id: int(time.time() * 1000)})


async def depth(redis: Redis, settings: Settings) -> tuple[int, int]:
    """Jobs due now and jobs deferred (retries waiting out their backoff) in the queue."""
    queue = queue_key(settings)
    now_ms = int(time.time() * 1000)
    total, ready = await asyncio.gather(redis.zcard(queue), redis.zcount(queue, "-inf", now_ms))
    return int(ready), int(total) - int(ready)


async def waiting(redis: Redis, settings: Settings) -> tuple[int, float | None]:
    """Jobs due now that no worker runs yet, and when the oldest of them became due (epoch s;
    None when none waits).

    arq keeps a running job in the queue until it finishes, marked by its in-progress key, so
    due entries are checked against those keys. Workers take due jobs oldest first, so the
    running ones sit at the head: the first WAITING_SCAN_LIMIT due entries are checked, and
    any beyond them are counted as waiting.
    """
    queue = queue_key(settings)
    now_ms = int(time.time() * 1000)
    due = await redis.zrangebyscore(
        queue, "-inf", now_ms, start=0, num=WAITING_SCAN_LIMIT, withscores=True
    )
    if not due:
        return 0, None
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, _ in due:
            pipe.exists(in_progress_key(job_id.decode() if isinstance(job_id, bytes) else job_id))
        running = await pipe.execute()
    idle = [float(score) for (_, score), busy in zip(due, running, strict=True) if not busy]
    total = len(due)
    if total == WAITING_SCAN_LIMIT:
        total = int(await redis.zcount(queue, "-inf", now_ms))
    return total - sum(1 for busy in running if busy), (idle[0] / 1000 if idle else None)


# Past this many jobs ahead a place in the queue says little; the count stops there.
_AHEAD_LIMIT = 500


async def waiting_ahead(redis: Redis, settings: Settings, job_id: str) -> int | None:
    """How many jobs due before `job_id` still wait for a worker (running ones left out), at
    most 500; None when `job_id` is not in the queue or a worker runs it already.

    arq keeps a job in the queue's zset while it runs (until it finishes), so the zset order
    alone would count running jobs as ahead; their in-progress markers tell them apart.
    """
    queue = queue_key(settings)
    score = await redis.zscore(queue, job_id)
    if score is None or await redis.exists(in_progress_key(job_id)):
        return None
    ahead = [
        _text(j)
        for j in await redis.zrangebyscore(queue, "-inf", score, start=0, num=_AHEAD_LIMIT + 1)
    ]
    ahead = [j for j in ahead if j != job_id][:_AHEAD_LIMIT]
    if not ahead:
        return 0
    running = await redis.mget([in_progress_key(j) for j in ahead])
    return sum(marker is None for marker in running)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def live_workers(redis: Redis, settings: Settings) -> tuple[int, int]:
    """Live workers (fresh heartbeats) and the jobs they say they are running."""
    keys = [k async for k in redis.scan_iter(heartbeat_pattern(settings), count=1000)]
    if not keys:
        return 0, 0
    # A heartbeat may expire between SCAN and MGET: that worker is not counted.
    beats = await redis.mget(keys)
    return sum(beat is not None for beat in beats), sum(jobs_ongoing(beat) for beat in beats)


class LeasedWorker(Worker):
    """arq's Worker, made to respect leases when it finishes a job.

    arq ends every run by deleting the job's in-progress key (and, for a finished job, the job
    and its queue entry) without asking whose the key is now. After a lost lease it belongs to
    the attempt that took the job over; deleting it would let a third attempt start, and
    finishing the job would drop it from the queue under a running attempt. So a run whose
    lease is no longer in the key leaves the job to its holder. A job this worker still runs
    is not started a second time beside itself either.
    """

    # Set when SIGTERM or SIGINT reached this worker, so whoever runs it starts no other: a
    # worker that never reached Redis has no main task for arq to cancel.
    stop_requested = False

    def handle_sig(self, signum: signal.Signals) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stop_requested = True
        super().handle_sig(signum)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease_tokens: dict[str, str] = self.ctx.setdefault("lease_tokens", {})
        self._slot_freed = asyncio.Event()
        self._claim: Any = None
        self._finish: Any = None

    async def _poll_iteration(self) -> None:
        """arq's poll, again each time a slot frees, until poll_delay has passed.

        arq starts at most as many jobs as it has free slots in one poll and then sleeps out
        poll_delay: a job shorter than that left its slot idle for the rest of it, which capped
        a burst of small jobs at WORKER_CONCURRENCY per poll_delay (50 jobs/s at 5 and 0.1 s).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_delay_s
        self._slot_freed.clear()
        await super()._poll_iteration()
        while self.allow_pick_jobs:
            if not self._slot_freed.is_set():
                # Free slots that were free all through the poll: the queue had nothing more.
                # (A slot that freed during the poll may have missed jobs it read: poll again.)
                if self.job_counter < self.max_jobs:
                    return
                try:
                    async with asyncio.timeout(deadline - loop.time()):
                        await self._slot_freed.wait()
                except TimeoutError:
                    return
            self._slot_freed.clear()
            await super()._poll_iteration()

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_freed.set()

    async def close(self) -> None:
        """arq's close, also when a job task ended cancelled outside its job's body.

        arq gathers the job tasks without return_exceptions, so a task a SIGTERM cancelled in
        its first pipeline or its shielded finish raised CancelledError out of close(): the
        health key stayed, on_shutdown (webhook sender, clients) never ran, and the worker
        exited with status 1 (about one SIGTERM in ten in the middle of a burst).
        """
        try:
            await super().close()
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # close() itself was cancelled
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            self.tasks.clear()
            await super().close()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs (arq/worker.py 0.28), claiming each job in one atomic round trip.

        A job this worker already runs is not started a second time beside itself.
        """
        if self._claim is None:
            self._claim = self.pool.register_script(_CLAIM)
        for job_id_b in job_ids:
            job_id = job_id_b.decode()
            if job_id in self.tasks:
                continue
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            now_ms = round(time.time() * 1000)
            ttl_ms = int(self.in_progress_timeout_s * 1000)
            try:
                score = await self._claim(
                    keys=[in_progress_key(job_id), self.queue_name], args=[job_id, now_ms, ttl_ms]
                )
            except BaseException:
                self.job_counter -= 1
                self.sem.release()
                raise
            if score is None:
                # Running elsewhere, finished, or re-queued with a delay by another worker.
                self.job_counter -= 1
                self.sem.release()
                logger.debug("job %s already running elsewhere", job_id)
                continue
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """arq's finish_job (arq/worker.py 0.28) as one script that first checks the lease."""
        if self._finish is None:
            self._finish = self.pool.register_script(_FINISH)
        token = self.lease_tokens.pop(job_id, None)
        expire = None if keep_result_forever else result_timeout_s
        keep = None if keep_in_progress is None else to_ms(keep_in_progress)
        done = await self._finish(
            keys=[
                in_progress_key(job_id),
                result_key_prefix + job_id,
                retry_key_prefix + job_id,
                job_key_prefix + job_id,
                abort_jobs_ss,
                self.queue_name,
            ],
            args=[
                job_id,
                token or "",
                "1" if finish else "0",
                result_data or b"",
                "" if expire is None else to_ms(expire),
                incr_score or "",
                "" if keep is None else keep,
            ],
        )
        if not done:
            logger.warning("job %s changed hands during this run; leaving it be", job_id)


def worker_redis(settings: Settings) -> QueueRedis:
    """The client an arq worker polls the queue with (`redis_pool=`; the worker closes it).

    Built by redisconn like every other client, so a worker follows a Sentinel failover; arq's
    own RedisSettings would connect to sentinels and master without any timeout.
    """
    redis = redisconn.connect(
        settings, QueueRedis, socket_connect_timeout=2, socket_timeout=5, retry_on_timeout=False
    )
    # What arq's create_pool would set: the queue its own enqueues (cron jobs) default to.
    redis.default_queue_name = queue_key(settings)
    return redis


def leased_worker(lease_seconds: float, **options: Any) -> Worker:
    """A LeasedWorker built from arq Worker `options`, whose in-progress keys live one lease."""
    worker = LeasedWorker(**options)
    worker.in_progress_timeout_s = lease_seconds
    return worker
