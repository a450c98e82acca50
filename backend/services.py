"""The process's shared clients, built the same way by the API, the worker and the CLI.

No other module opens a Redis or S3 client of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from backend import redisconn
from backend.catalogue_index import CatalogueIndex
from backend.jobs import JobStore
from backend.queue import QueueRedis
from backend.settings import Settings
from backend.storage import Storage


@dataclass(slots=True)
class Services:
    settings: Settings
    # Commands: short timeouts, so a Redis outage turns into a quick, clear error.
    redis: QueueRedis
    # The one long-lived pub/sub reader of this process (no read timeout: it idles for long).
    listener: Redis
    storage: Storage
    store: JobStore
    # The catalogue as readers see it: the source bucket's listing, indexed in Redis.
    catalogue: CatalogueIndex
    # Behind Sentinel: moves every client above (and `follow`'s) to a new master (redisconn).
    master_watch: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: Settings, follow: Sequence[Redis] = ()) -> Services:
        """Connect lazily: nothing here fails when Redis or S3 is down; calls do, later.

        `follow`: more clients of this process (the arq worker's) to move after a failover.
        """
        redis = redisconn.connect(
            settings,
            QueueRedis,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
            retry_on_timeout=False,
        )
        # Named so operators (and tests) can find each process's single event reader. Each
        # reconnection of the hub (events.py) takes a new connection: behind Sentinel, to
        # whichever server is master by then.
        listener = redisconn.connect(
            settings,
            Redis,
            socket_connect_timeout=2,
            socket_keepalive=True,
            health_check_interval=15,
            client_name=f"longhaul-events-{os.getpid()}",
        )
        storage = Storage(settings)
        await storage.open()
        store = JobStore(
            redis, prefix=settings.key_prefix, ttl_seconds=settings.job_record_ttl_seconds
        )
        watch = None
        if settings.sentinel_addresses:
            watch = asyncio.create_task(
                redisconn.follow_master([redis, listener, *follow]), name="redis-master-watch"
            )
        catalogue = CatalogueIndex(
            redis, storage.sources, settings.key_prefix, settings.catalogue_refresh_seconds
        )
        return cls(
            settings=settings,
            redis=redis,
            listener=listener,
            storage=storage,
            store=store,
            catalogue=catalogue,
            master_watch=watch,
        )

    async def close(self) -> None:
        if self.master_watch is not None:
            self.master_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.master_watch
        await self.storage.close()
        await self.listener.aclose()
        await self.redis.aclose()

    async def redis_ok(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:
            return False
