"""Per-client limits shared by every API process through Redis.

A fixed one-minute window per client (INCR + EXPIRE, atomic in Redis), answered with the IETF
`RateLimit-*` headers, and 429 + `Retry-After` past the limit. Open event streams are counted
per client in a sorted set whose entries carry their own expiry, so a crashed process cannot
leak a slot for longer than a lease.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any

import msgspec
from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.auth import client_identity
from backend.routes import UNLIMITED_GROUPS, group_of
from backend.services import Services

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
STREAM_LEASE_SECONDS = 120
# The headers every limited answer carries (cors.py exposes them to pages).
LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


class RateLimited(Exception):
    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


async def count_request(redis: Redis, prefix: str, client: str, limit: int) -> tuple[int, int]:
    """Count one request; returns (remaining, seconds until the window resets)."""
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    key = f"{prefix}:rate:{client}:{window}"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, WINDOW_SECONDS + 1)
        used, _ = await pipe.execute()
    reset = max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
    return limit - int(used), reset


async def admit_search(redis: Redis, prefix: str, client: str, limit: int) -> None:
    """Count one new catalogue search (a scan of every name) for `client`; RateLimited past
    `limit` a minute (CATALOGUE_SEARCHES_PER_MINUTE), Retry-After the window's end."""
    remaining, reset = await count_request(redis, f"{prefix}:search", client, limit)
    if remaining < 0:
        raise RateLimited(
            f"too many new catalogue searches: {limit} a minute per client "
            f"(repeats, paging, size bounds and sorts of a recent search are not counted); "
            f"retry in {reset} s",
            reset,
        )


class StreamLease:
    """A slot among a client's open event streams; `release()` when the stream ends."""

    def __init__(self, redis: Redis, key: str, member: str) -> None:
        self._redis = redis
        self._key = key
        self._member = member

    async def renew(self) -> None:
        """Keep the slot (and the client's set of slots) for another STREAM_LEASE_SECONDS."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self._key, {self._member: time.time() + STREAM_LEASE_SECONDS})
            pipe.expire(self._key, STREAM_LEASE_SECONDS)
            await pipe.execute()

    async def release(self) -> None:
        # If Redis is away the lease simply runs out by itself.
        with contextlib.suppress(RedisError):
            await self._redis.zrem(self._key, self._member)


async def open_stream(redis: Redis, prefix: str, client: str, limit: int) -> StreamLease:
    """Take a stream slot for `client`, or raise RateLimited when all are in use."""
    key = f"{prefix}:streams:{client}"
    now = time.time()
    member = uuid.uuid4().hex
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {member: now + STREAM_LEASE_SECONDS})
        pipe.zcard(key)
        pipe.expire(key, STREAM_LEASE_SECONDS)
        _, _, open_count, _ = await pipe.execute()
    lease = StreamLease(redis, key, member)
    if int(open_count) > limit:
        await lease.release()
        raise RateLimited(f"too many open event streams for this client (limit {limit})", 5)
    return lease


def _client_of(scope: Scope, services: Services) -> str:
    headers = MutableScopeHeaders(scope)
    client = scope.get("client")
    return client_identity(
        headers.get("authorization"), client[0] if client else None, services.settings
    )


def rate_limit_middleware(app: ASGIApp) -> ASGIApp:
    """ASGI middleware applying the per-client request limit to everything not exempt.

    It runs outside routing (edges.py), so unknown paths and wrong methods count too.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        # Exact groups (routes.py): "/healthz" and other unknown paths count like any request.
        if scope["type"] != "http" or group_of(path) in UNLIMITED_GROUPS:
            await app(scope, receive, send)
            return
        services: Services = scope["litestar_app"].state.services
        limit = services.settings.rate_limit_per_minute
        try:
            remaining, reset = await count_request(
                services.redis, services.settings.key_prefix, _client_of(scope, services), limit
            )
        except RedisError as exc:
            # Fail open: the request itself will meet the outage and answer 503.
            logger.warning("rate limit not checked, Redis unavailable: %s", exc)
            await app(scope, receive, send)
            return
        limit_headers = {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(max(remaining, 0)),
            "RateLimit-Reset": str(reset),
        }
        if remaining < 0:
            await _too_many(send, limit_headers, reset, limit)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                for name, value in limit_headers.items():
                    headers[name] = value
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware


async def _too_many(send: Send, headers: dict[str, str], reset: int, limit: int) -> None:
    detail = f"rate limit exceeded: {limit} requests per minute; retry in {reset} s"
    body = msgspec.json.encode({"status_code": 429, "detail": detail})
    raw: list[Any] = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw += [
        (b"retry-after", str(reset).encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    start: Any = {"type": "http.response.start", "status": 429, "headers": raw}
    await send(start)
    end: Any = {"type": "http.response.body", "body": body}
    await send(end)
