"""OpenTelemetry traces, configured by the standard OTEL_* variables and off when they are unset.

On when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or
OTEL_TRACES_EXPORTER is set; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none keep it off.
Spans go to an OTLP/HTTP collector (Jaeger listens on :4318), named by OTEL_SERVICE_NAME.

A job's trace starts at the POST: its W3C trace context is stored on the job record, and every
worker attempt continues that trace, so retries, files, S3 calls and the upload sit under the
request that asked for them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

TRACER_NAME = "longhaul"
_EXPORTERS = {"otlp", "console"}


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the OTEL_* variables ask for traces."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(exporter or endpoint)


def enabled() -> bool:
    """Whether this process records spans (configured here, or a provider installed by a test)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def configure(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install the process's tracer provider from OTEL_*; returns whether tracing is on.

    `service_name` applies unless OTEL_SERVICE_NAME names the service.
    """
    env = os.environ if environ is None else environ
    if enabled():
        return True
    if not wanted(env):
        return False
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if exporter_name not in _EXPORTERS:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={exporter_name!r} is not supported; use otlp, console or none"
        )
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(_exporter(exporter_name)))
    trace.set_tracer_provider(provider)
    return True


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    # Imported here: the exporter pulls in protobuf and requests, needed only when on.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT itself.
    return OTLPSpanExporter()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def inject() -> dict[str, str]:
    """The current trace context as W3C headers (`traceparent`, `tracestate`); {} when off."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str]) -> Context:
    return propagate.extract(dict(carrier))


def trace_id_of(carrier: Mapping[str, str]) -> str | None:
    """The 32-hex trace id in a stored `traceparent`, if there is one."""
    parts = carrier.get("traceparent", "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1]
    return None


@contextlib.contextmanager
def job_attempt_span(job_id: str, attempt: int, trace_context: Mapping[str, str]) -> Iterator[Span]:
    """The span of one worker attempt, a child of the request that started the job.

    Exceptions are not recorded automatically: arq's `Retry` would hide the real error, so
    the worker reports the outcome through `failed()`.
    """
    with tracer().start_as_current_span(
        "job.attempt",
        context=extract(trace_context),
        kind=SpanKind.CONSUMER,
        attributes={"longhaul.job_id": job_id, "longhaul.attempt": attempt},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def failed(message: str, exc: BaseException | None = None) -> None:
    """Mark the current span as failed with `message` (and the exception, when there is one)."""
    span = trace.get_current_span()
    if exc is not None:
        span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, message))


def asgi_plugins() -> list[Any]:
    """Litestar's OpenTelemetry plugin when tracing is on, else nothing."""
    if not enabled():
        return []
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

    from backend.routes import QUIET_GROUPS, path_patterns

    config = OpenTelemetryConfig(
        # Probes and static files are noise; one span per SSE message would be too.
        exclude=path_patterns(QUIET_GROUPS),
        exclude_spans=["receive", "send"],
    )
    return [OpenTelemetryPlugin(config)]
