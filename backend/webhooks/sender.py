"""The worker's webhook sender: claim due deliveries and make each attempt on its own.

Up to CONCURRENCY attempts are in flight per worker, each in a task of its own that ends by
its time limit (delivery.send), and the loop claims more as soon as a slot is free: a receiver
that answers slowly, or never finishes answering, holds back its own delivery and no other.
A claim holds a delivery for `lease_seconds`, well past the longest an attempt can take, so
no other worker sends it again while it is in flight; a worker that dies mid-attempt leaves it
due again when the claim lapses (delivery is at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx

from backend.services import Services
from backend.settings import Settings
from backend.webhooks.delivery import client_for, deliver
from backend.webhooks.outbox import Outbox
from backend.webhooks.ssrf import RESOLVE_TIMEOUT_SECONDS

logger = logging.getLogger(__name__)

# Attempts in flight at once per worker: each costs a socket and a few KiB.
CONCURRENCY = 32
# How often a sender with free slots looks for due deliveries.
POLL_SECONDS = 0.5
# Beyond an attempt's own limits: reading the delivery, building its payload, recording it.
_LEASE_MARGIN_SECONDS = 30.0


def lease_seconds(settings: Settings) -> float:
    """How long a claim holds a delivery, in seconds: the address lookup's limit, twice the
    exchange's (WEBHOOK_TIMEOUT_SECONDS) and a margin, so it outlives any attempt."""
    return RESOLVE_TIMEOUT_SECONDS + 2 * settings.webhook_timeout_seconds + _LEASE_MARGIN_SECONDS


async def run_sender(services: Services, concurrency: int = CONCURRENCY) -> None:
    """Deliver webhooks until cancelled (a worker's background task), outliving Redis outages.

    Cancelling it cancels the attempts in flight; their claims lapse and they are sent again.
    """
    outbox = Outbox(services.redis, services.settings.key_prefix)
    in_flight: set[asyncio.Task[None]] = set()
    async with client_for(services) as client:
        try:
            while True:
                for job_id, event in await _claim(services, outbox, concurrency - len(in_flight)):
                    task = asyncio.create_task(_attempt(services, outbox, client, job_id, event))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if len(in_flight) >= concurrency:
                    # Every slot is busy: claim again as soon as one is free.
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                else:
                    # Fewer were due than slots were free: nothing more is due yet.
                    await asyncio.sleep(POLL_SECONDS)
        finally:
            pending = list(in_flight)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def _claim(services: Services, outbox: Outbox, free: int) -> list[tuple[str, str]]:
    if free <= 0:
        return []
    try:
        return await outbox.claim(time.time(), lease_seconds(services.settings), free)
    except Exception as exc:  # Redis away: look again after a pause
        logger.warning("webhook sender: %s", exc)
        return []


async def _attempt(
    services: Services, outbox: Outbox, client: httpx.AsyncClient, job_id: str, event: str
) -> None:
    try:
        await deliver(services, outbox, client, job_id, event)
    except Exception as exc:
        # A delivery left claimed is due again when its claim lapses: nothing is lost.
        logger.warning("webhook for job %s (%s): %s", job_id, event, exc)


async def stop_sender(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
