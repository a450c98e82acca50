"""Prometheus metrics, scraped from real processes while real jobs run.

An API process and a worker process (its endpoint on METRICS_PORT) share a stack of their own;
the worker runs one job at a time, throttled, so jobs can be seen waiting behind a running one.
A second worker, whose S3 server is gone, shows a job failing through its retries. Each test
reads the counters before and after what it does, so the order of tests does not matter.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from httpx_sse import aconnect_sse
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from backend import devstack
from backend.devstack import free_port
from backend.downloads import start_job
from backend.metrics.queuestate import read_queue_state
from backend.services import Services
from backend.settings import Settings, load_settings
from tests.helpers import eventually, fetch, start, wait_for_status, wait_until_running
from tests.stack import env_for, seed_stack

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "longhaul-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
KIND = "build_archive"
STATUS_ROUTE = "/v1/download/status/{job_id}"
# 1 MiB/s: file 8 (6 MiB) keeps the only worker slot busy for ~6 s; file 5 (10 bytes) is instant.
THROTTLE = 1024 * 1024
SLOW_JOB, QUICK_JOB = [8], [5]
ACTIVE_JOB_CAP = 3
_NAME = re.compile(r"\blonghaul_[a-z0-9_]+")
_SELECTOR = re.compile(r"\b(longhaul_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")


@dataclass(frozen=True)
class Scrape:
    content_type: str
    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels`."""
        return sum(
            s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items()
        )

    def names(self) -> set[str]:
        return {s.name for s in self.samples}

    def labels_of(self, name: str) -> set[str]:
        return {label for s in self.samples if s.name == name for label in s.labels}


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    families = text_string_to_metric_families(response.text)
    return Scrape(
        response.headers["content-type"], [s for family in families for s in family.samples]
    )


@dataclass
class MetricsStack:
    env: dict[str, str]
    api: devstack.Process
    worker_metrics: str
    broken_env: dict[str, str]
    broken_worker_metrics: str

    @property
    def api_metrics(self) -> str:
        return f"{self.api.url}/metrics"


@pytest.fixture(scope="module")
async def stack(
    redis_server: devstack.Process, s3_server: devstack.Process, state_dir: Path
) -> AsyncIterator[MetricsStack]:
    """The API, a worker with one slot, and a worker whose S3 server is gone, each its port."""
    worker_port, broken_port = free_port(), free_port()
    env = env_for(
        redis_server.url,
        s3_server.url,
        f"lh-metrics-{os.getpid()}",
        METRICS_PORT=str(worker_port),
        WORKER_CONCURRENCY="1",
        THROTTLE_BYTES_PER_SECOND=str(THROTTLE),
        MAX_ACTIVE_JOBS_PER_CLIENT=str(ACTIVE_JOB_CAP),
    )
    broken_env = env_for(
        redis_server.url,
        f"http://127.0.0.1:{free_port()}",  # nothing listens: every S3 call fails at once
        f"lh-metrics-broken-{os.getpid()}",
        METRICS_PORT=str(broken_port),
        RETRY_BACKOFF_SECONDS="0.1",
    )
    await seed_stack(env)
    logs = state_dir / "metrics-logs"
    processes: list[devstack.Process] = []
    try:
        api = devstack.start_api(env, logs, name="metrics-api")
        processes.append(api)
        processes.append(devstack.start_worker(env, logs, name="metrics-worker"))
        processes.append(devstack.start_worker(broken_env, logs, name="metrics-broken-worker"))
        yield MetricsStack(
            env,
            api,
            f"http://127.0.0.1:{worker_port}/metrics",
            broken_env,
            f"http://127.0.0.1:{broken_port}/metrics",
        )
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
async def api(stack: MetricsStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api.url, timeout=30) as client:
        yield client


async def test_api_counts_answers_by_route_template_and_unknown_paths_under_one_label(
    stack: MetricsStack, api: httpx.AsyncClient
) -> None:
    before = await scrape(stack.api_metrics)
    unknown_jobs = [uuid.uuid4().hex for _ in range(3)]
    for job_id in unknown_jobs:
        assert (await api.get(f"/v1/download/status/{job_id}")).status_code == 404
    unknown_paths = [f"/no-such-page-{uuid.uuid4().hex}" for _ in range(3)]
    for path in unknown_paths:
        assert (await api.get(path)).status_code == 404
    assert (await api.post("/v1/files")).status_code == 405
    assert (await api.head("/health")).status_code == 200
    # A method HTTP parsers know but no route takes (WebDAV).
    brewed = await api.request("PROPFIND", "/health")
    after = await scrape(stack.api_metrics)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    requests = "longhaul_http_requests_total"
    assert moved(requests, route=STATUS_ROUTE, method="GET", status="404") == 3
    assert moved("longhaul_http_request_duration_seconds_count", route=STATUS_ROUTE) == 3
    # Three different unknown paths, a method no route takes: one label, whatever the path.
    assert moved(requests, route="unmatched", method="GET", status="404") == 3
    assert moved(requests, route="unmatched", method="POST", status="405") == 1
    assert moved(requests, method="other", status=str(brewed.status_code)) == 1
    # HEAD runs as a GET on a copy of the request, and is still counted under its route.
    assert moved(requests, route="/health", method="HEAD", status="200") == 1
    # The previous scrape counted itself, once it had answered.
    assert moved(requests, route="/metrics", method="GET", status="200") >= 1
    routes = {s.labels["route"] for s in after.samples if s.name == requests}
    for raw in [*unknown_jobs, *unknown_paths]:
        assert not any(raw in route for route in routes), routes
    assert after.content_type.startswith("text/plain; version=")
    # Process figures come with it (this process's memory, CPU, open files).
    assert after.value("process_resident_memory_bytes") > 0


async def test_a_completed_and_a_failed_job_move_the_counters_by_exactly_one_each(
    stack: MetricsStack, api: httpx.AsyncClient
) -> None:
    api_before = await scrape(stack.api_metrics)
    before = await scrape(stack.worker_metrics)

    key = uuid.uuid4().hex
    created = await start(api, [1, 5], headers={"Idempotency-Key": key})
    # The same request again returns the same job: replayed, not a second job.
    again = await start(api, [1, 5], headers={"Idempotency-Key": key})
    assert again["job_id"] == created["job_id"]
    ready = await wait_for_status(api, created["job_id"], {"ready", "failed"})
    assert ready["status"] == "ready", ready
    archive = await fetch(ready["download_url"])
    # No such file: the job cannot succeed and fails at its first attempt, without a retry.
    missing = await start(api, [987654])
    failed = await wait_for_status(api, missing["job_id"], {"ready", "failed"})
    assert failed["status"] == "failed", failed

    after = await scrape(stack.worker_metrics)
    api_after = await scrape(stack.api_metrics)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("longhaul_job_attempts_total", kind=KIND) == 2
    assert moved("longhaul_job_retries_total", kind=KIND) == 0
    assert moved("longhaul_jobs_ended_total", kind=KIND, outcome="completed") == 1
    assert moved("longhaul_jobs_ended_total", kind=KIND, outcome="failed") == 1
    assert moved("longhaul_jobs_ended_total", kind=KIND, outcome="cancelled") == 0
    assert moved("longhaul_job_build_duration_seconds_count", kind=KIND) == 2
    assert moved("longhaul_job_build_duration_seconds_sum", kind=KIND) > 0
    assert moved("longhaul_job_request_to_ready_seconds_count", kind=KIND) == 1
    assert moved("longhaul_archive_bytes_total") == len(archive)

    submitted = "longhaul_jobs_submitted_total"
    assert (
        api_after.value(submitted, outcome="accepted")
        - api_before.value(submitted, outcome="accepted")
        == 2
    )
    assert (
        api_after.value(submitted, outcome="replayed")
        - api_before.value(submitted, outcome="replayed")
        == 1
    )
    # An id of a job is never a label value, in either process.
    for sample in [*after.samples, *api_after.samples]:
        assert created["job_id"] not in json.dumps(sample.labels)


async def test_a_job_failing_through_its_retries_counts_every_attempt_and_one_failure(
    stack: MetricsStack,
) -> None:
    settings = load_settings(stack.broken_env)
    services = await Services.open(settings)
    try:
        before = await scrape(stack.broken_worker_metrics)
        record = await start_job(services, [1], "public")
        done = await eventually(
            lambda: services.store.get(record.job_id),
            lambda r: r is not None and r.status.is_terminal,
            timeout=60,
        )
        assert done is not None and done.status.value == "failed", done
        after = await scrape(stack.broken_worker_metrics)
    finally:
        await services.close()

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    attempts = settings.max_attempts  # MAX_RETRIES (3) + 1
    assert done.attempt == attempts
    assert moved("longhaul_job_attempts_total", kind=KIND) == attempts
    assert moved("longhaul_job_retries_total", kind=KIND) == attempts - 1
    assert moved("longhaul_jobs_ended_total", kind=KIND, outcome="failed") == 1
    assert moved("longhaul_jobs_ended_total", kind=KIND, outcome="completed") == 0
    assert moved("longhaul_job_build_duration_seconds_count", kind=KIND) == attempts
    assert moved("longhaul_job_request_to_ready_seconds_count", kind=KIND) == 0
    assert moved("longhaul_archive_bytes_total") == 0


async def test_jobs_behind_a_busy_worker_show_as_queue_depth_and_age_and_streams_as_live(
    stack: MetricsStack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.api.url, timeout=30) as browser:
        # A person's page: the owner cookie, and the CSRF token app.js would send.
        page = await browser.get("/")
        token = re.search(r'<meta name="csrf-token" content="([^"]*)">', page.text)
        assert token is not None
        browser.headers["X-CSRFToken"] = token.group(1)
        api_before = await scrape(stack.api_metrics)

        slow = await start(browser, SLOW_JOB)
        await wait_until_running(browser, slow["job_id"])
        queued_at = time.time()
        waiting = [await start(browser, QUICK_JOB) for _ in range(ACTIVE_JOB_CAP - 1)]
        refused = await browser.post("/v1/download/async", json={"file_ids": QUICK_JOB})
        assert refused.status_code == 429, refused.text

        streams = [
            asyncio.create_task(hold_stream(browser, f"/v1/download/subscribe/{slow['job_id']}")),
            asyncio.create_task(hold_stream(browser, f"/events?jobs={slow['job_id']}")),
        ]
        try:
            # The one worker runs the slow job; the other two wait for it.
            busy = await eventually(
                lambda: scrape(stack.worker_metrics),
                lambda s: s.value("longhaul_queue_depth") == 2,
            )
            age = busy.value("longhaul_queue_oldest_job_age_seconds")
            assert 0 <= age <= time.time() - queued_at + 1
            assert busy.value("longhaul_workers_live") == 1
            live = await eventually(
                lambda: scrape(stack.api_metrics),
                lambda s: (
                    s.value("longhaul_sse_streams", stream="job") >= 1
                    and s.value("longhaul_sse_streams", stream="page") >= 1
                ),
            )
            assert live.value("longhaul_sse_streams", stream="job") == 1
            assert live.value("longhaul_sse_streams", stream="page") == 1
        finally:
            for stream in streams:
                stream.cancel()
            await asyncio.gather(*streams, return_exceptions=True)

        for job in [slow, *waiting]:
            done = await wait_for_status(browser, job["job_id"], {"ready", "failed"})
            assert done["status"] == "ready", done
        idle = await scrape(stack.worker_metrics)
        assert idle.value("longhaul_queue_depth") == 0
        assert idle.value("longhaul_queue_oldest_job_age_seconds") == 0
        api_after = await eventually(
            lambda: scrape(stack.api_metrics),
            lambda s: s.value("longhaul_sse_streams") == 0,
        )

    submitted = "longhaul_jobs_submitted_total"
    assert (
        api_after.value(submitted, outcome="refused")
        - api_before.value(submitted, outcome="refused")
        == 1
    )
    assert (
        api_after.value(submitted, outcome="accepted")
        - api_before.value(submitted, outcome="accepted")
        == ACTIVE_JOB_CAP
    )


async def hold_stream(client: httpx.AsyncClient, path: str) -> None:
    """Read an event stream until cancelled (or until the server ends it)."""
    async with aconnect_sse(client, "GET", path) as source:
        assert source.response.status_code == 200
        async for _ in source.aiter_sse():
            pass


async def test_queue_state_counts_jobs_waiting_when_no_worker_runs(
    services: Services, settings: Settings
) -> None:
    """What a worker's scrape reads from Redis, on a queue no worker serves."""
    assert await read_queue_state(settings) == (0, 0.0, 0)
    for _ in range(3):
        await start_job(services, QUICK_JOB, "public")
    await asyncio.sleep(0.3)
    depth, age, workers = await read_queue_state(settings)
    assert (depth, workers) == (3, 0)
    assert 0.3 <= age < 30


def referenced_names(text: str) -> set[str]:
    return set(_NAME.findall(text))


async def test_dashboard_and_alerts_use_only_metrics_and_labels_real_scrapes_expose(
    stack: MetricsStack, api: httpx.AsyncClient
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    alerts = yaml.safe_load(ALERTS.read_text())

    # A Grafana dashboard: unique panel ids, every panel placed, every query on the datasource
    # variable.
    assert dashboard["uid"] and dashboard["title"]
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    queries: list[str] = []
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            queries.append(target["expr"])
    # Prometheus rules: each alert has an expression, a duration, a severity and a summary.
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == {
        "LonghaulQueuedJobWaitingTooLong",
        "LonghaulJobFailureRatioHigh",
        "LonghaulNoLiveWorkers",
        "LonghaulWorkersCannotReachRedis",
        "LonghaulApi5xxRatioHigh",
    }
    for rule in rules:
        assert rule["expr"] and rule["for"], rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
    expected_panels = {
        "longhaul_http_requests_total",
        "longhaul_http_request_duration_seconds_bucket",
        "longhaul_queue_depth",
        "longhaul_queue_oldest_job_age_seconds",
        "longhaul_jobs_ended_total",
        "longhaul_job_build_duration_seconds_bucket",
        "longhaul_workers_live",
        "longhaul_sse_streams",
    }
    assert referenced_names("\n".join(queries)) >= expected_panels

    # Every name and label they use is in a real scrape of the API and a worker.
    assert (await api.get("/health")).status_code == 200
    scrapes = [await scrape(stack.api_metrics), await scrape(stack.worker_metrics)]
    exposed = set().union(*(s.names() for s in scrapes))
    texts = {"dashboard": DASHBOARD.read_text(), "alerts": ALERTS.read_text()}
    for where, text in texts.items():
        names = referenced_names(text)
        assert names, where
        assert names <= exposed, (where, sorted(names - exposed))
        for name, matchers in _SELECTOR.findall(text):
            labels = set().union(*(s.labels_of(name) for s in scrapes))
            assert set(_MATCHER_LABEL.findall(matchers)) <= labels, (where, name, matchers)


async def test_the_workers_endpoint_ends_with_the_worker_and_a_taken_port_stops_nothing(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    worker = devstack.start_worker({**isolated_env, "METRICS_PORT": str(port)}, tmp_path)
    try:
        scraped = await scrape(f"http://127.0.0.1:{port}/metrics")
        assert scraped.value("longhaul_workers_live") >= 0
        # Another worker on the same host and port: it logs why it has no endpoint, and works.
        second = devstack.start_worker(
            {**isolated_env, "METRICS_PORT": str(port)}, tmp_path, name="second"
        )
        second.stop()
        assert second.popen.returncode == 0
        assert f"cannot listen on METRICS_PORT={port}" in second.log_tail(200)
    finally:
        started = time.monotonic()
        worker.stop()
    stopped_in = time.monotonic() - started
    print(f"\nSIGTERM -> worker and its metrics endpoint gone: {stopped_in:.1f} s")
    assert worker.popen.returncode == 0
    assert stopped_in < 10
    with pytest.raises(httpx.ConnectError):
        await scrape(f"http://127.0.0.1:{port}/metrics")
