"""create_app(settings) -> Litestar: routes, plugins, lifespan; nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from litestar import Litestar
from litestar.config.csrf import CSRFConfig
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.di import Provide
from litestar.logging.config import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig
from litestar.template.base import csrf_token

from backend import errorreporting, leases, tracing
from backend.api.deps import (
    provide_client,
    provide_health_probes,
    provide_hub,
    provide_requester,
    provide_services,
)
from backend.api.downloads import DownloadController
from backend.api.errors import EXCEPTION_HANDLERS
from backend.api.files import list_files
from backend.api.health import HealthProbes, health
from backend.api.jsonbody import JsonRequest
from backend.api.listing import list_downloads, retry_download
from backend.api.webhook_docs import WEBHOOKS
from backend.edges import wrap_every_answer
from backend.events import EventHub
from backend.metrics import api as metrics_api
from backend.metrics.http import metrics
from backend.pages import page_routes
from backend.routes import CSRF_EXEMPT_GROUPS, DOCS_PATH, STATIC_PATH, path_patterns
from backend.services import Services
from backend.settings import Settings, load_settings

logger = logging.getLogger(__name__)

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
# 1000 ids of up to 16 digits fit in ~17 KB; anything much larger is not a real request.
MAX_BODY_BYTES = 64 * 1024


def _register_template_callables(engine: JinjaTemplateEngine) -> None:
    engine.register_template_callable("csrf_token", csrf_token)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await Services.open(settings)
        hub = EventHub(services.listener, services.store)
        app.state.services = services
        app.state.hub = hub
        app.state.health_probes = HealthProbes.of(services)
        try:
            await services.storage.ensure_buckets()
        except Exception as exc:
            # Start anyway: /health reports storage, and the worker retries jobs.
            logger.warning("could not ensure buckets at startup: %s", exc)
        await hub.start()
        # The API watches leases too, so a job whose only worker died still says so.
        watcher = asyncio.create_task(
            leases.watch_lapsed(services.store, settings.job_lease_seconds / 3)
        )
        try:
            yield
        finally:
            watcher.cancel()
            await hub.stop()
            await services.close()
            errorreporting.flush()
            metrics_api.process_ended(os.getpid())

    app = Litestar(
        route_handlers=[
            DownloadController,
            list_downloads,
            retry_download,
            list_files,
            health,
            metrics,
            *page_routes(),
            create_static_files_router(
                path=STATIC_PATH,
                directories=[FRONTEND / "static"],
                send_as_attachment=False,
                name="static",
                include_in_schema=False,
            ),
        ],
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "hub": Provide(provide_hub, sync_to_thread=False),
            "health_probes": Provide(provide_health_probes, sync_to_thread=False),
            "requester": Provide(provide_requester, sync_to_thread=False),
            "client": Provide(provide_client, sync_to_thread=False),
        },
        lifespan=[lifespan],
        # OpenTelemetry's ASGI middleware, outside every other one; none when tracing is off.
        plugins=tracing.asgi_plugins(),
        # Keep the JSON root handler of logs.py: by default Litestar replaces it with its own
        # plain-text one, and its own logger's lines should be JSON too.
        logging_config=LoggingConfig(
            configure_root_logger=False,
            loggers={"litestar": {"level": "INFO", "handlers": [], "propagate": True}},
        ),
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        # Reads JSON bodies only when typed as JSON, and refuses nesting it cannot decode.
        request_class=JsonRequest,
        request_max_body_size=MAX_BODY_BYTES,
        template_config=TemplateConfig(
            directory=FRONTEND / "templates",
            engine=JinjaTemplateEngine,
            engine_callback=_register_template_callables,
        ),
        # Page forms post through htmx, which sends the token as a header (see app.js).
        # The JSON API is exempt: it takes only bodies typed as JSON (a cross-site page cannot
        # send one without a CORS preflight; jsonbody.py refuses the rest) and bearer tokens,
        # which browsers never attach.
        csrf_config=CSRFConfig(
            secret=settings.secret_key,
            cookie_name="longhaul_csrf",
            cookie_httponly=True,
            cookie_samesite="lax",
            header_name="x-csrftoken",
            exclude=path_patterns(CSRF_EXEMPT_GROUPS),
        ),
        openapi_config=OpenAPIConfig(
            title="Longhaul",
            version="1.0.0",
            description="Async bulk downloads: start a job, follow it, fetch one ZIP.",
            path=DOCS_PATH,
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
            # What Longhaul POSTs to a job's callback_url (OpenAPI 3.1 `webhooks`).
            webhooks=WEBHOOKS,
        ),
        debug=False,
    )
    # Request ids, access lines, security headers, CORS, rate limits and HEAD, around every
    # answer: Litestar's own 404 and 405 included, which its `middleware=` never sees.
    wrap_every_answer(app, settings)
    return app


def app_from_environment() -> Litestar:
    """The app of one process among `--workers N`: settings, logs and tracing set up here.

    uvicorn's process manager calls this in each freshly spawned process (`factory=True`).
    """
    from backend.logs import configure_logging

    _exit_with_parent()
    settings = load_settings()
    configure_logging(settings.log_level)
    configure_api_process(settings)
    return create_app(settings)


def configure_api_process(settings: Settings) -> None:
    """Tracing and error reporting of one API process (before its app is built)."""
    from backend.api.errors import EXPECTED_ERRORS

    tracing.configure("longhaul-api")
    errorreporting.configure(settings, "longhaul-api", expected=EXPECTED_ERRORS)


def _exit_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its manager dies, even by SIGKILL.

    Without it a killed manager leaves its processes serving the port, unmanaged.
    (prctl(2) PR_SET_PDEATHSIG; elsewhere this does nothing.)
    """
    import ctypes
    import multiprocessing
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    parent = multiprocessing.parent_process()
    # The manager may have died before the request above was in place.
    if parent is not None and os.getppid() != parent.pid:
        os.kill(os.getpid(), signal.SIGTERM)
