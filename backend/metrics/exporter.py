"""The worker's Prometheus endpoint: `http://<host>:METRICS_PORT/metrics`, for the whole process.

prometheus_client's own HTTP server, on a daemon thread, so it answers while the worker's event
loop is busy and across the worker rebuilding itself after a Redis outage (worker.serve); it is
shut down when the worker stops. It listens on every interface (a scraper reaches a container
from outside it); keep the port internal.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator

from prometheus_client import start_http_server

from backend.metrics.queuestate import QueueState
from backend.metrics.worker import REGISTRY, declare_kinds
from backend.settings import Settings

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def worker_metrics_served(settings: Settings, kinds: Iterable[str]) -> Iterator[None]:
    """Serve the worker's metrics on METRICS_PORT while the block runs (nothing if it is 0).

    A port that cannot be bound is logged as an error and the worker runs on without metrics:
    its jobs matter more, and the scraper's `up` series shows the target missing.
    """
    declare_kinds(kinds)
    if settings.metrics_port == 0:
        yield
        return
    queue_state = QueueState(settings)
    REGISTRY.register(queue_state)
    try:
        server, thread = start_http_server(settings.metrics_port, registry=REGISTRY)
    except OSError as exc:
        logger.error("metrics: cannot listen on METRICS_PORT=%d: %s", settings.metrics_port, exc)
        REGISTRY.unregister(queue_state)
        yield
        return
    logger.info("metrics on http://0.0.0.0:%d/metrics", settings.metrics_port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        REGISTRY.unregister(queue_state)
