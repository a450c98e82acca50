"""The whole stack for browser journeys, and Chromium driving it.

The e2e stack has its own S3 server process (so a test can stop it mid-job and start it again)
and a throttled worker, so jobs take a few seconds and progress is visible on the page.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from redis.asyncio import Redis

from backend import devstack
from backend.settings import load_settings
from backend.storage import Storage
from tests.stack import CHROMIUM, CHROMIUM_ARGS, env_for, seed_catalogue

# Slow enough that a 2 MB job shows several progress values, fast enough to keep tests short.
THROTTLE_BYTES_PER_SECOND = 512 * 1024
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "e2e"
DESKTOP = {"width": 1280, "height": 900}
MAX_FILES_PER_JOB = 6
PHONE = {"width": 390, "height": 844}

# Records what reaches the page by SSE, read back by the tests through `sse_log(page)`.
RECORD_SSE = """
window.__sse = [];
document.addEventListener('htmx:sseMessage', function (evt) {
  var card = evt.target.closest && evt.target.closest('[data-job-id]');
  var bar = evt.target.querySelector && evt.target.querySelector('[role=progressbar]');
  var state = evt.target.querySelector && evt.target.querySelector('[data-testid=job-state]');
  var attempt = evt.target.querySelector && evt.target.querySelector('[data-testid=job-attempt]');
  window.__sse.push({
    job: card ? card.dataset.jobId : null,
    value: bar ? Number(bar.getAttribute('aria-valuenow')) : null,
    state: state ? state.dataset.state : null,
    attempt: attempt ? attempt.textContent.trim() : null
  });
});
"""


@dataclass
class E2EStack:
    """The running stack: API and worker processes, Redis, and an S3 server we may restart."""

    url: str
    env: dict[str, str]
    s3: devstack.Process
    s3_port: int
    log_dir: Path
    processes: list[devstack.Process] = field(default_factory=list)

    async def seed(self) -> None:
        storage = Storage(load_settings(self.env))
        await storage.open()
        try:
            await seed_catalogue(storage)
        finally:
            await storage.close()

    async def forget_shared_archives(self) -> None:
        """Drop the records of finished archives (reuse.py), as a fresh deployment has none: a
        journey that asks for files an earlier one did must watch its job build, not find it
        ready at once."""
        redis = Redis.from_url(self.env["REDIS_URL"])
        try:
            prefix = self.env["KEY_PREFIX"]
            records = [
                key
                async for key in redis.scan_iter(f"{prefix}:archive:*")
                if not key.endswith(b":builder")
            ]
            await redis.delete(f"{prefix}:archives", *records)
        finally:
            await redis.aclose()

    async def stop_s3(self) -> None:
        await asyncio.to_thread(self.s3.stop)

    async def start_s3(self) -> None:
        """Start the S3 server again on its port; moto keeps data in memory, so re-seed."""
        self.s3 = await asyncio.to_thread(devstack.start_s3, self.log_dir, self.s3_port)
        await self.seed()


@pytest.fixture(scope="session")
async def e2e_stack(redis_server: devstack.Process, state_dir: Path) -> AsyncIterator[E2EStack]:
    log_dir = state_dir / "e2e-logs"
    s3_port = devstack.free_port()
    s3 = devstack.start_s3(log_dir, s3_port)
    env = env_for(
        redis_server.url,
        s3.url,
        "lh-e2e",
        THROTTLE_BYTES_PER_SECOND=str(THROTTLE_BYTES_PER_SECOND),
        SSE_PING_SECONDS="5",
        # Below the catalogue's 8 files, so a journey can select past the limit.
        MAX_FILES_PER_JOB=str(MAX_FILES_PER_JOB),
    )
    stack = E2EStack(url="", env=env, s3=s3, s3_port=s3_port, log_dir=log_dir)
    await stack.seed()
    worker = devstack.start_worker(env, log_dir, name="e2e-worker")
    api = devstack.start_api(env, log_dir, name="e2e-api")
    stack.url = api.url
    stack.processes = [worker, api]
    yield stack
    for process in (api, worker):
        process.stop()
    stack.s3.stop()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def context(browser: Browser, e2e_stack: E2EStack) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile per test: its own owner cookie, so its own jobs."""
    await e2e_stack.forget_shared_archives()
    created = await browser.new_context(
        base_url=e2e_stack.url, viewport=DESKTOP, accept_downloads=True
    )
    await created.add_init_script(RECORD_SSE)
    yield created
    await created.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
async def page(context: BrowserContext, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    opened = await context.new_page()
    yield opened
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        await screenshot(opened, f"{request.node.name}-failed")


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG under artifacts/e2e/ (ignored by git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
