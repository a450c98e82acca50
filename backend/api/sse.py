"""What every event stream shares: the client's stream slot, the opening frame, keep-alive
pings, the slot's release, and `204 No Content` when there is nothing left to stream.

The slot is taken before the answer starts, so a client at its cap gets a plain 429. It is given
back when the answer's ASGI call ends, however it ends: the server closing the stream, the
client dropping mid-stream, or the client resetting before the first byte. In that last case
the body's generator never starts, so a `finally` inside it never runs; the slot would stay
taken until its lease ran out (two minutes), and a few resets would lock the client out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
from litestar import Request, Response
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_204_NO_CONTENT
from litestar.types import ASGIApp, Receive, Scope, Send
from redis.exceptions import RedisError

from backend.metrics.api import live_stream
from backend.ratelimit import STREAM_LEASE_SECONDS, StreamLease, open_stream
from backend.services import Services

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# EventSource reconnect delay we ask browsers for, in milliseconds.
SSE_RETRY_MS = 2000

# What a stream's source yields: a frame to send, or None after an idle interval.
Frame = ServerSentEventMessage | None


def nothing_to_stream(request: Request[Any, Any, Any]) -> ASGIApp:
    """`204 No Content`: the HTML standard's signal for EventSource to stop reconnecting."""
    return Response(content=None, status_code=HTTP_204_NO_CONTENT).to_asgi_response(
        app=None, request=request
    )


async def event_stream(
    request: Request[Any, Any, Any],
    services: Services,
    client: str,
    frames: AsyncGenerator[Frame, None],
) -> ASGIApp:
    """The answer streaming `frames`, in one of `client`'s stream slots.

    Raises RateLimited when all of the client's slots (MAX_STREAMS_PER_CLIENT) are taken.
    """
    lease = await open_stream(
        services.redis,
        services.settings.key_prefix,
        client,
        services.settings.max_streams_per_client,
    )
    stream = ServerSentEvent(_framed(frames, lease), headers=SSE_HEADERS)
    return _ReleasingLease(stream.to_asgi_response(app=None, request=request), lease)


async def _framed(
    frames: AsyncGenerator[Frame, None], lease: StreamLease
) -> AsyncIterator[ServerSentEventMessage]:
    yield ServerSentEventMessage(comment="stream open", retry=SSE_RETRY_MS, data=None)
    renewed_at = time.monotonic()
    try:
        async for frame in frames:
            # On a clock, not on idle pings only: a busy stream sends no pings, and a slot
            # left to lapse would let the client open streams past its cap.
            if time.monotonic() - renewed_at >= STREAM_LEASE_SECONDS / 4:
                await lease.renew()
                renewed_at = time.monotonic()
            if frame is None:
                # Idle proxies (nginx, ALB, Cloudflare) close silent connections; a comment
                # line keeps them open and is ignored by EventSource.
                yield ServerSentEventMessage(comment="ping", data=None)
            else:
                yield frame
    except RedisError as exc:
        # Ending the stream makes the client reconnect (with Last-Event-ID): nothing is lost.
        logger.warning("event stream ended early, Redis unavailable: %s", exc)
    finally:
        with anyio.CancelScope(shield=True):
            await frames.aclose()


class _ReleasingLease:
    """An answer's ASGI app that gives its stream slot back when the call ends."""

    __slots__ = ("_lease", "_response")

    def __init__(self, response: ASGIApp, lease: StreamLease) -> None:
        self._response = response
        self._lease = lease

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with live_stream(scope["path"]):
                await self._response(scope, receive, send)
        finally:
            # Also when the call is cancelled (the server shutting down).
            with anyio.CancelScope(shield=True):
                await self._lease.release()
