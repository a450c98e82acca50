"""Proof through a real proxy: Debian's nginx runs the project's config in front of the app.

The API read timeout is cut to a few seconds and jobs are throttled to take several times
longer, so every job here would die at the proxy if a request waited on the work.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse
from playwright.async_api import async_playwright, expect

from backend import devstack
from backend.jobs import parse_event_id
from e2e.journey import (
    archive_digests,
    download_archive,
    download_files,
    expected_digests,
    wait_for_state,
)
from tests.helpers import fetch, start, wait_for_status, zip_digests
from tests.nginx_fixtures import AccessEntry, Nginx, SlowUpstream, start_nginx
from tests.stack import (
    CATALOGUE_BY_ID,
    CHROMIUM,
    CHROMIUM_ARGS,
    env_for,
    seed_stack,
)

CUT_TIMEOUT_SECONDS = 2
# Files 1-3 (~3.9 MB) take ~7.5 s at this rate: several times the cut timeout.
THROTTLE_BYTES_PER_SECOND = 512 * 1024
LONG_JOB = [1, 2, 3]
# Jobs as long, of other files: the same files again would reuse LONG_JOB's archive and be
# ready at once, with no progress to watch.
LONG_JOB_FOR_SSE = [2, 3, 4]
LONG_JOB_FOR_THE_PAGE = [1, 2, 4]
APP_CSS = Path(__file__).resolve().parent.parent / "frontend" / "static" / "app.css"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "e2e"


@dataclass
class ProxiedStack:
    nginx: Nginx
    apis: list[devstack.Process]
    env: dict[str, str]


@pytest.fixture(scope="module")
async def proxied(
    redis_server: devstack.Process, s3_server: devstack.Process, state_dir: Path
) -> AsyncIterator[ProxiedStack]:
    """Two API processes and a throttled worker behind nginx with a cut API timeout."""
    env = env_for(
        redis_server.url,
        s3_server.url,
        "lh-nginx",
        THROTTLE_BYTES_PER_SECOND=str(THROTTLE_BYTES_PER_SECOND),
    )
    await seed_stack(env)
    log_dir = state_dir / "nginx-logs"
    apis = [devstack.start_api(env, log_dir, name=f"nginx-api-{n}") for n in ("a", "b")]
    worker = devstack.start_worker(env, log_dir, name="nginx-worker")
    nginx = start_nginx(
        state_dir / "nginx",
        [api.url for api in apis],
        LONGHAUL_API_READ_TIMEOUT=f"{CUT_TIMEOUT_SECONDS}s",
    )
    yield ProxiedStack(nginx=nginx, apis=apis, env=env)
    nginx.stop()
    worker.stop()
    for api in apis:
        api.stop()


@pytest.fixture
async def via_nginx(proxied: ProxiedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=proxied.nginx.url, timeout=30) as client:
        yield client


@dataclass
class Arrival:
    event: str
    data: dict[str, object]
    # When the event was written to Redis (its stream id) and when it reached us.
    written: float
    arrived: float


async def follow(client: httpx.AsyncClient, job_id: str) -> tuple[float, list[Arrival]]:
    """Read a job's stream to its end; returns when the stream opened and every arrival."""
    arrivals: list[Arrival] = []
    async with aconnect_sse(client, "GET", f"/v1/download/subscribe/{job_id}") as source:
        assert source.response.status_code == 200
        opened = time.time()
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            position = parse_event_id(sse.id)
            assert position is not None, sse.id
            arrivals.append(
                Arrival(sse.event, json.loads(sse.data), position[0] / 1000, time.time())
            )
            if sse.event in {"completed", "failed", "cancelled"}:
                break
    return opened, arrivals


async def logged(
    nginx: Nginx, where: Callable[[AccessEntry], bool], count: int = 1
) -> list[AccessEntry]:
    """The access log's entries matching `where`, once `count` of them are written.

    nginx writes a line when it finalizes the request, which may be after the client has
    read the whole answer.
    """

    async def written() -> list[AccessEntry]:
        while True:
            entries = [e for e in nginx.access_entries() if where(e)]
            if len(entries) >= count:
                return entries
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(written(), 10)


async def test_json_flow_through_nginx_completes_a_job_longer_than_the_proxy_timeout(
    via_nginx: httpx.AsyncClient,
) -> None:
    created = await start(via_nginx, LONG_JOB)
    status = await wait_for_status(via_nginx, created["job_id"], {"ready", "failed"}, timeout=90)
    assert status["status"] == "ready", status
    # The point of the exercise: the work outlasted the proxy's timeout several times over.
    assert status["finished_at"] - status["created_at"] > 3 * CUT_TIMEOUT_SECONDS
    expected = {CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in LONG_JOB}
    assert zip_digests(await fetch(status["download_url"])) == expected


async def test_sse_events_arrive_through_nginx_as_they_happen(
    via_nginx: httpx.AsyncClient,
) -> None:
    created = await start(via_nginx, LONG_JOB_FOR_SSE)
    opened, arrivals = await asyncio.wait_for(follow(via_nginx, created["job_id"]), 90)

    assert arrivals[-1].event == "completed"
    live = [a for a in arrivals if a.written >= opened]
    progress = [a for a in live if a.event == "progress"]
    assert len(progress) >= 5, [a.data for a in arrivals]
    # Buffering would deliver early events late, in one burst at the end.
    lags = [a.arrived - a.written for a in live]
    assert max(lags) < 2.0, lags  # a held-back event would lag by most of the job (~7 s)
    spread = live[-1].arrived - live[0].arrived
    assert spread > 2 * CUT_TIMEOUT_SECONDS, spread
    distinct_seconds = {int(a.arrived) for a in progress}
    assert len(distinct_seconds) >= 4, distinct_seconds


async def test_clients_on_either_api_process_see_the_workers_events(
    proxied: ProxiedStack, via_nginx: httpx.AsyncClient
) -> None:
    created = await start(via_nginx, [3, 4])
    job_id = created["job_id"]
    # Round robin over two upstreams: four streams land two on each process.
    followed = await asyncio.wait_for(
        asyncio.gather(*(follow(via_nginx, job_id) for _ in range(4))), 60
    )

    for opened, arrivals in followed:
        assert arrivals[-1].event == "completed"
        assert any(a.event == "progress" and a.written >= opened for a in arrivals), arrivals
    path = f"/v1/download/subscribe/{job_id}"
    entries = await logged(proxied.nginx, lambda e: e.path == path, 4)
    served_by = {entry.upstream for entry in entries}
    assert served_by == {api.url.split("://", 1)[1] for api in proxied.apis}


async def test_a_request_held_past_the_cut_timeout_gets_504_while_a_stream_lives_on(
    tmp_path: Path,
) -> None:
    held = 2 * CUT_TIMEOUT_SECONDS
    job_path = "/v1/download/status/" + "a" * 32
    stream_path = "/v1/download/subscribe/" + "a" * 32
    async with SlowUpstream(hold=held) as upstream:
        nginx = await asyncio.to_thread(
            start_nginx,
            tmp_path / "nginx",
            [upstream.url],
            LONGHAUL_API_READ_TIMEOUT=f"{CUT_TIMEOUT_SECONDS}s",
        )
        try:
            async with httpx.AsyncClient(base_url=nginx.url, timeout=30) as client:
                plain, stream = await asyncio.gather(client.get(job_path), client.get(stream_path))
        finally:
            await asyncio.to_thread(nginx.stop)

    # The upstream did get both requests: the 504 is the read timeout, not a refused connection.
    assert sorted(upstream.paths) == sorted([job_path, stream_path])
    assert plain.status_code == 504
    assert plain.headers["content-type"].startswith("application/json")
    assert plain.json() == {"status_code": 504, "detail": "the API did not answer in time"}
    assert stream.status_code == 200
    assert "event: completed" in stream.text


async def test_static_files_come_from_nginx_with_caching_headers_and_gzip(
    proxied: ProxiedStack, via_nginx: httpx.AsyncClient
) -> None:
    response = await via_nginx.get("/static/app.css", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["cache-control"] == "max-age=3600"
    assert "expires" in response.headers
    assert "etag" in response.headers or "last-modified" in response.headers
    assert response.text == APP_CSS.read_text()

    entries = await logged(proxied.nginx, lambda e: e.path == "/static/app.css")
    assert entries[-1].upstream == "-"


async def test_json_is_gzipped_but_the_event_stream_never_is(via_nginx: httpx.AsyncClient) -> None:
    schema = await via_nginx.get("/docs/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert schema.status_code == 200
    assert schema.headers["content-encoding"] == "gzip"
    assert schema.json()["info"]["title"] == "Longhaul"

    created = await start(via_nginx, [5])
    await wait_for_status(via_nginx, created["job_id"], {"ready"})
    stream = await via_nginx.get(
        f"/v1/download/subscribe/{created['job_id']}", headers={"Accept-Encoding": "gzip"}
    )
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in stream.headers
    assert "event: completed" in stream.text


async def test_a_body_over_the_limit_is_refused_by_nginx_with_json(
    proxied: ProxiedStack, via_nginx: httpx.AsyncClient
) -> None:
    ids = ",".join(str(n) for n in range(1, 20_000))
    response = await via_nginx.post(
        "/v1/download/async",
        content=f'{{"file_ids": [{ids}]}}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json() == {"status_code": 413, "detail": "request body: at most 64 KiB"}
    (refused,) = await logged(
        proxied.nginx, lambda e: e.path == "/v1/download/async" and e.status == 413
    )
    assert refused.upstream == "-"


async def test_metrics_are_refused_at_the_proxy_and_served_by_each_api_process(
    proxied: ProxiedStack, via_nginx: httpx.AsyncClient
) -> None:
    for method, path in (("GET", "/metrics"), ("HEAD", "/metrics"), ("GET", "/metrics?x=1")):
        assert (await via_nginx.request(method, path)).status_code == 403, (method, path)
    refused = await via_nginx.get("/metrics")
    assert refused.json() == {
        "status_code": 403,
        "detail": "metrics: scrape each API process directly",
    }
    # Answered by nginx itself: no API process saw any of them.
    entries = await logged(
        proxied.nginx, lambda e: e.path.startswith("/metrics") and e.status == 403, count=4
    )
    assert {entry.upstream for entry in entries} == {"-"}
    # Each API process serves its own, to a scraper that reaches it directly.
    for api in proxied.apis:
        async with httpx.AsyncClient(timeout=10) as client:
            direct = await client.get(f"{api.url}/metrics")
        assert direct.status_code == 200
        assert "longhaul_http_requests_total" in direct.text


async def api_access_line(api: devstack.Process, request_id: str) -> dict[str, object]:
    """The API process's JSON access line for `request_id`, once written."""
    assert api.log_path is not None
    log_path = api.log_path

    async def written() -> dict[str, object]:
        while True:
            for line in log_path.read_text(errors="replace").splitlines():
                if request_id in line and '"longhaul.access"' in line:
                    entry: dict[str, object] = json.loads(line)
                    return entry
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(written(), 10)


async def test_client_address_comes_through_nginx_and_cannot_be_forged(
    proxied: ProxiedStack,
) -> None:
    # 127.0.0.2 is a loopback address that is not the trusted proxy's (127.0.0.1).
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    forged = {"X-Forwarded-For": "203.0.113.9"}
    async with httpx.AsyncClient(transport=transport, timeout=30) as client:
        through = await client.get(
            f"{proxied.nginx.url}/v1/files", headers={**forged, "X-Request-ID": "via-nginx-1"}
        )
        direct = await client.get(
            f"{proxied.apis[0].url}/v1/files", headers={**forged, "X-Request-ID": "direct-1"}
        )
    assert through.status_code == direct.status_code == 200

    (entry,) = await logged(proxied.nginx, lambda e: e.request_id == "via-nginx-1")
    served_by = next(api for api in proxied.apis if api.url.endswith(entry.upstream))
    assert (await api_access_line(served_by, "via-nginx-1"))["client"] == "127.0.0.2"
    # Straight to the API the forwarded header is not trusted either.
    assert (await api_access_line(proxied.apis[0], "direct-1"))["client"] == "127.0.0.2"


async def test_one_request_id_names_the_request_in_nginx_the_app_and_the_answer(
    proxied: ProxiedStack, via_nginx: httpx.AsyncClient
) -> None:
    sent = await via_nginx.get("/v1/files", headers={"X-Request-ID": "trace-me-42"})
    assert sent.headers["x-request-id"] == "trace-me-42"

    made = await via_nginx.get("/v1/files")
    request_id = made.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id  # nginx's $request_id
    (entry,) = await logged(proxied.nginx, lambda e: e.request_id == request_id)
    assert entry.path == "/v1/files"
    served_by = next(api for api in proxied.apis if api.url.endswith(entry.upstream))
    line = await api_access_line(served_by, request_id)
    assert line["request_id"] == request_id
    assert line["path"] == "/v1/files"


# What reached the page by SSE, read back through `window.__sse`.
RECORD_SSE = """
window.__sse = [];
document.addEventListener('htmx:sseMessage', function (evt) {
  var bar = evt.target.querySelector && evt.target.querySelector('[role=progressbar]');
  window.__sse.push(bar ? Number(bar.getAttribute('aria-valuenow')) : null);
});
"""


@pytest.mark.e2e
async def test_the_browser_flow_through_nginx_completes_live_and_downloads_the_zip(
    proxied: ProxiedStack,
) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(base_url=proxied.nginx.url, accept_downloads=True)
            await context.add_init_script(RECORD_SSE)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto("/")
            await expect(page.get_by_test_id("catalogue-row")).to_have_count(len(CATALOGUE_BY_ID))
            job_id = await download_files(page, LONG_JOB_FOR_THE_PAGE)

            job_card = await wait_for_state(page, job_id, "ready")
            # Had nginx held the stream back, the page would have fallen back to polling.
            panel = page.get_by_test_id("downloads-panel")
            await expect(panel).to_have_attribute("data-live-mode", "sse")
            values = await page.evaluate("() => window.__sse")
            assert len({v for v in values if v is not None and 0 < v < 100}) >= 3, values
            archive = await download_archive(page, job_card)
            assert archive_digests(archive) == expected_digests(LONG_JOB_FOR_THE_PAGE)
            assert errors == []
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "through-nginx.png"), full_page=True)
        finally:
            await browser.close()

    # The browser's event stream went through nginx (its line is written once the stream ends,
    # here when the browser closed: it follows the browser's jobs, not one job).
    streams = await logged(proxied.nginx, lambda e: e.path == "/events?scope=browser")
    assert streams[0].status == 200
