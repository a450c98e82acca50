"""Traces: a job's spans continue the trace of the request that started it, across retries."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from backend import tracing
from backend.app import create_app
from backend.devstack import free_port
from backend.downloads import start_job
from backend.logs import JsonFormatter
from backend.models import JobState
from backend.services import Services
from backend.settings import Settings
from backend.worker import create_worker


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Every span this process ends, kept in memory; the provider stays installed afterwards."""
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()  # later spans are dropped, not kept for the rest of the session


async def run_worker(settings: Settings, **overrides: Any) -> None:
    # No cron: the sweeper's job must not take the single job a `max_burst_jobs=1` worker runs.
    worker = create_worker(
        settings, burst=True, poll_delay=0.05, handle_signals=False, cron_jobs=[], **overrides
    )
    try:
        await asyncio.wait_for(worker.async_run(), 60)
    finally:
        await worker.close()


async def fail_first_attempt_then_finish(settings: Settings) -> None:
    """Attempt 1 meets a dead S3 endpoint and is retried; a healthy worker runs attempt 2."""
    dead = settings.replace(s3_endpoint=f"http://127.0.0.1:{free_port()}")
    await run_worker(dead, max_burst_jobs=1)
    await run_worker(settings)


def in_trace(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.context is not None and s.context.trace_id == trace_id
    ]


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


async def test_every_attempt_and_its_file_and_upload_spans_join_the_starting_trace(
    exporter: InMemorySpanExporter, services: Services, settings: Settings
) -> None:
    with tracing.tracer().start_as_current_span("client request") as root:
        record = await start_job(services, [1, 2], "public")
    root_context = root.get_span_context()
    assert tracing.trace_id_of(record.trace_context) == format(root_context.trace_id, "032x")

    await fail_first_attempt_then_finish(settings)

    done = await services.store.get(record.job_id)
    assert done is not None
    assert done.status is JobState.READY
    assert done.attempt == 2
    spans = in_trace(exporter, root_context.trace_id)
    attempts = sorted(
        named(spans, "job.attempt"), key=lambda s: (s.attributes or {})["longhaul.attempt"]
    )
    assert [(s.attributes or {})["longhaul.attempt"] for s in attempts] == [1, 2]
    assert all(parent_of(s) == root_context.span_id for s in attempts)
    assert all((s.attributes or {})["longhaul.job_id"] == record.job_id for s in attempts)
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert "127.0.0.1" in (attempts[0].status.description or "")
    assert attempts[1].status.status_code is StatusCode.UNSET

    second = span_id(attempts[1])
    files = named(spans, "archive.file")
    assert sorted((s.attributes or {})["longhaul.file_id"] for s in files) == [1, 2]
    assert all(parent_of(s) == second for s in files)
    # Two small files make an archive under one part: stored with one PUT, no multipart upload.
    assert [parent_of(s) for s in named(spans, "s3.put_archive")] == [second]
    assert named(spans, "s3.upload_part") == named(spans, "s3.complete_upload") == []
    resolves = named(spans, "s3.resolve_sources")
    assert sorted(parent_of(s) or 0 for s in resolves) == sorted(span_id(a) for a in attempts)


async def test_the_post_request_span_is_the_parent_of_the_job(
    exporter: InMemorySpanExporter, services: Services, settings: Settings
) -> None:
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.post("/v1/download/async", json={"file_ids": [5]})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    record = await services.store.get(job_id)
    assert record is not None
    trace_hex = tracing.trace_id_of(record.trace_context)
    assert trace_hex is not None

    await run_worker(settings)

    spans = in_trace(exporter, int(trace_hex, 16))
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert [s.name for s in servers] == ["POST /v1/download/async"]
    (attempt,) = named(spans, "job.attempt")
    assert parent_of(attempt) == span_id(servers[0])
    assert len(named(spans, "archive.file")) == 1


async def test_worker_log_lines_carry_the_job_id_and_its_trace_id(
    exporter: InMemorySpanExporter, services: Services, settings: Settings
) -> None:
    lines: list[str] = []
    handler = logging.Handler()
    formatter = JsonFormatter()
    # Formatted as they are written: the job's context only exists while it runs.
    handler.emit = lambda record: lines.append(formatter.format(record))  # type: ignore[method-assign]
    worker_logger = logging.getLogger("backend.runner")
    worker_logger.addHandler(handler)
    try:
        with tracing.tracer().start_as_current_span("client request") as root:
            record = await start_job(services, [1], "public")
        dead = settings.replace(s3_endpoint=f"http://127.0.0.1:{free_port()}")
        await run_worker(dead, max_burst_jobs=1)
    finally:
        worker_logger.removeHandler(handler)

    retrying = [json.loads(line) for line in lines if "retrying" in line]
    assert retrying, lines
    assert retrying[0]["job_id"] == record.job_id
    assert retrying[0]["trace_id"] == format(root.get_span_context().trace_id, "032x")
    assert retrying[0]["level"] == "warning"


def test_tracing_is_on_only_when_the_otel_variables_ask_for_it() -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://j:4318/v1/traces"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318", "OTEL_SDK_DISABLED": "true"}
    )


PROBE = """
from backend import tracing
from backend.app import create_app
on = tracing.configure("longhaul-api")
plugins = [type(p).__name__ for p in create_app().plugins]
print(on, "OpenTelemetryPlugin" in plugins)
"""


@pytest.mark.parametrize(
    ("otel", "expected"),
    [({}, "False False"), ({"OTEL_TRACES_EXPORTER": "console"}, "True True")],
)
def test_a_fresh_api_process_instruments_requests_only_when_configured(
    otel: dict[str, str], expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | otel
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == expected
