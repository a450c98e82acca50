"""How every process reaches Redis: straight at REDIS_URL, or through Redis Sentinel.

The only module that turns settings into Redis clients; Services (API, worker, CLI), arq's
worker pool and the container health check all get theirs here.

With REDIS_SENTINELS set, a client does not hold an address: each new connection asks the
sentinels for the current master of REDIS_SENTINEL_MASTER (redis-py's SentinelConnectionPool,
https://redis.io/docs/latest/develop/reference/sentinel-clients/). After a failover the old
master's connections fail (ConnectionError, as in any Redis outage), the next connection goes
to the promoted replica, and a connection that finds its master demoted to a replica
(READONLY) is dropped too. REDIS_URL then gives only the master's db, user, password and TLS.

A connection made before a failover is not asked again, though: when the old master stays up
(a planned `SENTINEL FAILOVER`, a network split), it keeps accepting writes until the sentinels
demote it, up to ten seconds later, and a pub/sub reader on it hears nothing published on the
new one. `follow_master` closes such connections within a second of the sentinels' switch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, TypeVar, cast

from redis import Redis as SyncRedis
from redis import sentinel as sync_sentinel
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio import sentinel as async_sentinel
from redis.asyncio.connection import parse_url
from redis.exceptions import RedisError

from backend import rediscancel
from backend.settings import Settings

__all__ = ["connect", "connect_sync", "follow_master"]

logger = logging.getLogger(__name__)

# Every client is made here, so every client's commands stay cancellable (rediscancel.py).
rediscancel.install()

R = TypeVar("R", bound=Redis)

# How long to wait for a sentinel to answer "who is the master?": the sentinels are asked
# one after another, so a dead one must not hold up the next.
SENTINEL_TIMEOUT_SECONDS = 1.0


class _SentinelPool(async_sentinel.SentinelConnectionPool):
    """A master pool that also closes its sentinel connections when it is closed.

    redis-py closes only the master connections; the sentinels' would stay open until the
    process ends (every worker rebuild after an outage would leave a set behind). A sentinel
    client reconnects on its next query, so closing them is harmless if the pool lives on.
    """

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        # get_master_address disconnects only idle connections when the master moves: keep
        # the sentinels then.
        if inuse_connections:
            for client in self.sentinel_manager.sentinels:
                await client.connection_pool.disconnect()


class _SyncSentinelPool(sync_sentinel.SentinelConnectionPool):
    """The same for the synchronous client (health checks)."""

    def disconnect(self, inuse_connections: bool = True) -> None:
        super().disconnect(inuse_connections)
        if inuse_connections:
            for client in self.sentinel_manager.sentinels:
                client.connection_pool.disconnect()


def _master_options(settings: Settings) -> dict[str, Any]:
    """REDIS_URL's db, username, password and TLS, for connections whose address the
    sentinels give (its host and port are not used)."""
    parsed = parse_url(settings.redis_url)
    options = {
        key: parsed[key] for key in ("db", "username", "password") if parsed.get(key) is not None
    }
    if settings.redis_url.startswith("rediss://"):
        options["ssl"] = True
    return options


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
    }
    if settings.redis_sentinel_password:
        options["password"] = settings.redis_sentinel_password
    return options


def connect(settings: Settings, redis_class: type[R], **options: Any) -> R:
    """A `redis_class` client of the Redis master, with connection `options` (timeouts,
    client_name, ...). Lazy: nothing is reached until the first command, so this never
    fails for a Redis that is down. Closing the client closes every connection it made.
    """
    if not settings.sentinel_addresses:
        pool = ConnectionPool.from_url(settings.redis_url, **options)
        return cast(R, redis_class.from_pool(pool))
    manager = async_sentinel.Sentinel(
        settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings)
    )
    client = manager.master_for(
        settings.redis_sentinel_master,
        redis_class=redis_class,
        connection_pool_class=_SentinelPool,
        **_master_options(settings),
        **options,
    )
    return cast(R, client)


def connect_sync(settings: Settings, **options: Any) -> SyncRedis:
    """A synchronous client of the Redis master (for health checks, which are not async)."""
    if not settings.sentinel_addresses:
        return SyncRedis.from_url(settings.redis_url, **options)
    manager = sync_sentinel.Sentinel(
        settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings)
    )
    client = manager.master_for(
        settings.redis_sentinel_master,
        connection_pool_class=_SyncSentinelPool,
        **_master_options(settings),
        **options,
    )
    return cast(SyncRedis, client)


async def follow_master(clients: Sequence[Redis], every: float = 1.0) -> None:
    """Forever: ask the sentinels who is master every `every` seconds and, when that changes,
    close every connection of `clients` (in use too, pub/sub readers included) so that their
    next command or subscription goes to the new master. Returns at once without Sentinel.

    Callers holding a closed connection get a ConnectionError, as in any Redis outage.
    """
    pools = [
        client.connection_pool
        for client in clients
        if isinstance(client.connection_pool, async_sentinel.SentinelConnectionPool)
    ]
    if not pools:
        return
    while True:
        await asyncio.sleep(every)
        try:
            master = await pools[0].sentinel_manager.discover_master(pools[0].service_name)
        except (RedisError, OSError):
            continue  # mid-failover there is no master to follow yet
        for pool in pools:
            if pool.master_address is not None and pool.master_address != master:
                moved = (*pool.master_address, *master)
                logger.warning("Redis master moved from %s:%s to %s:%s; reconnecting", *moved)
                # Set first: the pool's own check would otherwise close idle ones again.
                pool.master_address = master
                await pool.disconnect()
