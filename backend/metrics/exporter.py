"""The worker's Prometheus endpoint: `http://<host>:METRICS_PORT/metrics`, for the whole process.

prometheus_client's WSGI app and threaded server (what its `start_http_server` runs), on a
daemon thread, so it answers while the worker's event loop is busy and across the worker
rebuilding itself after a Redis outage (worker.serve); it is shut down when the worker stops.
It listens on every interface (a scraper reaches a container from outside it); keep the port
internal.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from backend.metrics.queuestate import QueueState
from backend.metrics.worker import REGISTRY, declare_kinds
from backend.settings import Settings

logger = logging.getLogger(__name__)

# How often the server's loop looks for a shutdown: what stopping it can add to a worker's exit.
_POLL_SECONDS = 0.05


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # A line on stderr per scrape (every 15 s, forever) says nothing; failures are logged.
        pass


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
        server = make_server(
            "0.0.0.0",
            settings.metrics_port,
            make_wsgi_app(REGISTRY),
            ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        logger.error("metrics: cannot listen on METRICS_PORT=%d: %s", settings.metrics_port, exc)
        REGISTRY.unregister(queue_state)
        yield
        return
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": _POLL_SECONDS},
        name="metrics-endpoint",
        daemon=True,
    )
    thread.start()
    logger.info("metrics on http://0.0.0.0:%d/metrics", settings.metrics_port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        REGISTRY.unregister(queue_state)
