"""The operator page and the figures behind it, against real Redis, S3, workers and Chromium."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from backend import devstack, ops
from backend.downloads import start_job
from backend.models import JobRecord, JobState
from backend.services import Services
from backend.settings import Settings
from backend.worker import create_worker
from tests.helpers import eventually
from tests.stack import CHROMIUM, CHROMIUM_ARGS

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "e2e"


def record(job_id: str, status: JobState, **fields: Any) -> JobRecord:
    return JobRecord(job_id=job_id, owner="o", file_ids=[1], status=status, **fields)


def test_percentile_is_nearest_rank() -> None:
    assert ops.percentile([], 50) is None
    assert ops.percentile([3.0], 95) == 3.0
    values = [float(n) for n in range(1, 21)]
    assert ops.percentile(values, 50) == 10.0
    assert ops.percentile(values, 95) == 19.0
    assert ops.percentile(list(reversed(values)), 100) == 20.0


def test_summary_counts_states_lists_failures_newest_first_and_times_ready_jobs() -> None:
    trace = {"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"}
    records = [
        record("a" * 32, JobState.READY, created_at=100.0, started_at=101.0, finished_at=105.0),
        record("b" * 32, JobState.READY, created_at=100.0, started_at=110.0, finished_at=130.0),
        record("c" * 32, JobState.FAILED, error="S3 down", finished_at=50.0, attempt=4),
        record("d" * 32, JobState.FAILED, error="no files", finished_at=60.0, trace_context=trace),
        record("e" * 32, JobState.QUEUED),
    ]
    by_state, failures, durations = ops.summarize(records)

    assert by_state == {
        "queued": 1,
        "processing": 0,
        "ready": 2,
        "failed": 2,
        "cancelled": 0,
        "expired": 0,
    }
    assert [(f.job_ref, f.error, f.trace_id) for f in failures] == [
        ("dddddddd", "no files", "ab" * 16),
        ("cccccccc", "S3 down", None),
    ]
    assert failures[1].attempts == 4
    assert durations.count == 2
    assert (durations.run_p50, durations.run_p95) == (4.0, 20.0)
    assert (durations.total_p50, durations.total_p95) == (5.0, 30.0)


async def test_stats_show_queue_states_failures_and_live_workers(
    services: Services, settings: Settings
) -> None:
    ready = await start_job(services, [5], "public")
    failed = await start_job(services, [999_999], "public")
    worker = create_worker(
        settings, burst=True, poll_delay=0.05, handle_signals=False, cron_jobs=[]
    )
    try:
        await asyncio.wait_for(worker.async_run(), 60)
    finally:
        await worker.close()
    queued = await start_job(services, [1], "public")

    stats = await ops.gather_stats(services)
    assert stats.sampled == 3
    assert stats.by_state["ready"] == 1
    assert stats.by_state["failed"] == 1
    assert stats.by_state["queued"] == 1
    assert stats.queue_ready == 1
    assert stats.queue_deferred == 0
    assert [f.job_ref for f in stats.failures] == [failed.job_id[:8]]
    assert "none of the requested files exist" in stats.failures[0].error
    assert stats.durations.count == 1
    assert stats.durations.run_p50 is not None
    # A burst worker removes its heartbeat when it stops: nobody is serving the queue now.
    assert stats.workers == 0
    assert stats.checks == {"redis": "ok", "storage": "ok", "workers": "error"}
    assert ready.job_id[:8] not in {f.job_ref for f in stats.failures}
    assert queued.job_id[:8] not in {f.job_ref for f in stats.failures}

    serving = create_worker(settings, poll_delay=0.05, handle_signals=False, cron_jobs=[])
    running = asyncio.create_task(serving.async_run())
    try:
        live = await eventually(lambda: ops.gather_stats(services), lambda s: s.workers == 1)
        assert live.checks["workers"] == "ok"
        assert await asyncio.to_thread(ops.worker_alive_here, settings)
    finally:
        running.cancel()
        await serving.close()
    assert not await asyncio.to_thread(ops.worker_alive_here, settings)
    assert (await ops.gather_stats(services)).workers == 0


async def test_ops_page_and_fragment_render_with_a_polling_trigger(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/ops")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert '<link rel="stylesheet" href="/static/app.css">' in page.text
    assert 'hx-get="/ops/stats" hx-trigger="every 3s"' in page.text
    # The session's worker process keeps its heartbeat, and the API sees it.
    assert re.search(r'data-check="workers" data-state="ok"', page.text)
    assert re.search(r'data-check="redis" data-state="ok"', page.text)

    fragment = await http.get("/ops/stats")
    assert fragment.status_code == 200
    assert 'id="ops-stats"' in fragment.text
    assert "<html" not in fragment.text
    assert (await http.get("/static/ops.css")).status_code == 200


@pytest.mark.e2e
async def test_the_ops_page_updates_live_when_a_job_fails(
    http: httpx.AsyncClient, api_server: devstack.Process
) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(base_url=api_server.url)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto("/ops")
            await expect(page.get_by_test_id("ops-stats")).to_be_visible()
            first_update = await page.get_by_test_id("ops-updated").get_attribute("datetime")

            response = await http.post("/v1/download/async", json={"file_ids": [987_654]})
            job_ref = response.json()["job_id"][:8]
            failure = page.get_by_test_id("ops-failure").filter(has_text=job_ref)
            await expect(failure).to_have_count(1, timeout=15_000)
            await expect(failure.get_by_test_id("ops-failure-error")).to_contain_text(
                "none of the requested files exist"
            )
            assert await page.get_by_test_id("ops-updated").get_attribute("datetime") != (
                first_update
            )
            assert errors == []
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "ops-page.png"), full_page=True)
        finally:
            await browser.close()
