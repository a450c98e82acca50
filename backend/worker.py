"""The arq worker process: every job kind under the runner, the expiry sweeper, and a loop
that outlives Redis outages. What an attempt does is the runner's (runner.py) and its kind's
(kinds/); this module only assembles the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from typing import Any

from redis.exceptions import RedisError

from backend import leases
from backend.catalogue_index import run_refresher
from backend.expiry import sweep_cron
from backend.kinds import KINDS
from backend.metrics.exporter import worker_metrics_served
from backend.queue import (
    HEARTBEAT_SECONDS,
    Worker,
    cron,
    heartbeat_key,
    leased_worker,
    queue_key,
    worker_redis,
)
from backend.runner import job_function
from backend.services import Services
from backend.settings import Settings, load_settings
from backend.webhooks.sender import run_sender, stop_sender

logger = logging.getLogger(__name__)


async def _startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    # arq's own pool (ctx["redis"]) follows a failover with the rest.
    services = await Services.open(settings, follow=[ctx["redis"]])
    ctx["services"] = services
    ctx["lease_watch"] = asyncio.create_task(
        leases.watch_lapsed(services.store, settings.job_lease_seconds / 3)
    )
    # Webhooks of ended jobs go out from every worker; the outbox's claims share them out.
    ctx["webhook_sender"] = asyncio.create_task(run_sender(services))
    ctx["catalogue_refresher"] = asyncio.create_task(run_refresher(services.catalogue))
    try:
        await services.storage.ensure_buckets()
    except Exception as exc:
        # Buckets are retried by the API's startup and by every job; a worker still starts.
        logger.warning("could not ensure buckets at startup: %s", exc)


async def _shutdown(ctx: dict[str, Any]) -> None:
    for name in ("lease_watch", "catalogue_refresher"):
        task: asyncio.Task[None] | None = ctx.get(name)
        if task is not None:
            task.cancel()
    await stop_sender(ctx.pop("webhook_sender", None))
    services: Services | None = ctx.get("services")
    if services is not None:
        await services.close()


def create_worker(settings: Settings | None = None, **overrides: Any) -> Worker:
    """An arq Worker for `settings`; tests pass `burst=True, poll_delay=0`."""
    settings = settings or load_settings()
    options: dict[str, Any] = {
        "functions": [job_function(kind, settings) for kind in KINDS.values()],
        # Every worker runs the sweep; arq's unique cron job ids keep it to one run a minute.
        "cron_jobs": [cron(sweep_cron, name="sweep_expired", second=0, timeout=60)],
        "redis_pool": worker_redis(settings),
        "queue_name": queue_key(settings),
        "max_jobs": settings.worker_concurrency,
        "on_startup": _startup,
        "on_shutdown": _shutdown,
        "ctx": {"settings": settings},
        "allow_abort_jobs": True,
        # A heartbeat per worker (arq's health check under a key of its own): /ops counts them.
        "health_check_key": heartbeat_key(settings),
        "health_check_interval": HEARTBEAT_SECONDS,
        "keep_result": 60,
        "poll_delay": 0.1,
        "handle_signals": True,
    }
    options.update(overrides)
    # arq gives its in-progress key the job timeout + 10 s; a lease renewed by the attempt
    # (leases.py) lets another worker take a dead worker's job within seconds instead. The
    # sweeper cron holds no lease: if a sweep outlives one, a second may run; sweeps are
    # idempotent.
    return leased_worker(settings.job_lease_seconds, **options)


def serve(settings: Settings) -> None:
    """Run a worker until it is stopped by a signal, its metrics served on METRICS_PORT."""
    with worker_metrics_served(settings, KINDS):
        _serve_until_stopped(settings)


def _serve_until_stopped(settings: Settings) -> None:
    """Run a worker until it is stopped by a signal, outliving Redis outages.

    arq's worker exits when Redis goes away mid-job; rather than needing a restart by hand,
    we build a fresh worker and carry on. Jobs that were running re-run from the queue.
    """
    while True:
        worker = create_worker(settings)
        try:
            worker.run()
            return
        except (RedisError, OSError) as exc:
            # arq skips on_shutdown when its close fails; without this every outage would
            # leave a lease watcher and a set of clients behind.
            with contextlib.suppress(Exception):
                worker.loop.run_until_complete(_shutdown(worker.ctx))
            if getattr(worker, "stop_requested", False):
                logger.info("stopped while Redis was away")
                return
            logger.warning("worker lost Redis (%s); starting again in 1 s", exc)
            if _stop_signal_within(1.0):
                logger.info("stopped while Redis was away")
                return


def _stop_signal_within(seconds: float) -> bool:
    """Wait `seconds` for SIGTERM or SIGINT; whether one came.

    Between two workers no event loop runs, and arq's loop handlers would swallow the signal.
    """
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        return stop.wait(seconds)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
