"""Shared pytest fixtures: real Redis, a real S3 server, and the service processes.

Loaded for tests/ and e2e/ alike (`-p tests.stack` in pyproject). Every server runs on a free
loopback port with its data in a temp dir and is stopped at the end of the session.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from backend import devstack
from backend.seed import demo_bytes
from backend.services import Services
from backend.settings import Settings, load_settings
from backend.storage import Storage

if TYPE_CHECKING:
    from tests.cli_fixtures import FaultyProxy


def pytest_configure(config: pytest.Config) -> None:
    """Let the processes tests start take SIGINT and SIGHUP as they would from a terminal.

    A shell starts a background job with SIGINT ignored, nohup ignores SIGHUP, and an ignored
    signal stays ignored across exec in every child: the tests that press Ctrl-C on the CLI or
    hang up on `make run` would then wait on processes that cannot hear them. A child gets a
    handled signal back at its default action, and a default one as it is.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@dataclass(frozen=True)
class TestFile:
    file_id: int
    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _file(file_id: int, name: str, size: int) -> TestFile:
    return TestFile(file_id, name, demo_bytes(file_id, size))


# Small but real: several parts' worth in total, a multi-MiB file, an empty file, a name
# that needs UTF-8, and two files whose names collide.
CATALOGUE: tuple[TestFile, ...] = (
    _file(1, "alpha.txt", 200 * 1024),
    _file(2, "bravo.bin", 3 * 1024 * 1024 + 17),
    _file(3, "charlie.csv", 700 * 1024),
    _file(4, "délta résumé.pdf", 1024 * 1024),
    _file(5, "echo.log", 10),
    _file(6, "empty.dat", 0),
    _file(7, "alpha.txt", 64 * 1024),
    _file(8, "foxtrot.iso", 6 * 1024 * 1024),
)
CATALOGUE_BY_ID = {f.file_id: f for f in CATALOGUE}

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def redis_server(state_dir: Path) -> Iterator[devstack.Process]:
    process = devstack.start_redis(state_dir / "redis")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def s3_server(state_dir: Path) -> Iterator[devstack.Process]:
    process = devstack.start_s3(state_dir / "logs")
    yield process
    process.stop()


@pytest.fixture
async def s3_proxy(s3_server: devstack.Process) -> AsyncIterator[FaultyProxy]:
    """A recording TCP proxy in front of the session's S3 server (its exchanges, in order)."""
    # Imported here: tests.cli_fixtures imports this module.
    from tests.cli_fixtures import FaultyProxy

    proxy = FaultyProxy(int(urlsplit(s3_server.url).port or 0))
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
def recorded(settings: Settings, s3_proxy: FaultyProxy) -> Settings:
    """The test's settings with the worker's S3 traffic going through the proxy."""
    return settings.replace(s3_endpoint=s3_proxy.url)


def env_for(redis_url: str, s3_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """Environment variables of a Longhaul process for one isolated test stack."""
    env = devstack.stack_env(redis_url, s3_url, prefix)
    env |= {
        "JOB_TIMEOUT_SECONDS": "30",
        "SSE_PING_SECONDS": "15",
        "SECRET_KEY": "test-secret",
        "LOG_LEVEL": "INFO",
        # Tests share one client address; their own limits are tested on stacks of their own.
        "RATE_LIMIT_PER_MINUTE": "1000000",
        "MAX_ACTIVE_JOBS_PER_CLIENT": "100000",
        "MAX_STREAMS_PER_CLIENT": "100000",
        "JWT_SECRET": "test-jwt-secret-of-at-least-32-bytes",
    }
    env.update(extra)
    return env


# Debian's Chromium, as every browser test launches it (never a downloaded browser build).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def seed_stack(env: dict[str, str], files: tuple[TestFile, ...] = CATALOGUE) -> None:
    """Create the buckets of the stack `env` describes and upload the test catalogue."""
    storage = Storage(load_settings(env))
    await storage.open()
    try:
        await seed_catalogue(storage, files)
    finally:
        await storage.close()


async def seed_catalogue(storage: Storage, files: tuple[TestFile, ...] = CATALOGUE) -> None:
    await storage.ensure_buckets()
    for item in files:
        await storage.put_source(item.file_id, item.name, item.data)


@pytest.fixture(scope="session")
async def stack_env(redis_server: devstack.Process, s3_server: devstack.Process) -> dict[str, str]:
    """Env of the session's API and worker processes, with the test catalogue seeded."""
    env = env_for(redis_server.url, s3_server.url, "lh-stack")
    await seed_stack(env)
    return env


@pytest.fixture(scope="session")
def api_server(stack_env: dict[str, str], state_dir: Path) -> Iterator[devstack.Process]:
    process = devstack.start_api(stack_env, state_dir / "logs")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def worker_process(stack_env: dict[str, str], state_dir: Path) -> Iterator[devstack.Process]:
    process = devstack.start_worker(stack_env, state_dir / "logs")
    yield process
    process.stop()


@pytest.fixture
async def http(
    api_server: devstack.Process, worker_process: devstack.Process
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the session's API, with a worker running behind it."""
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
async def app_client(stack_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """The app in this process, its lifespan on the session's real Redis and S3 server.

    For the many contract tests (status codes, bodies, headers) that need no worker and no
    subprocess: the same `create_app` as `python -m backend api`, behind the same outer layer.
    """
    from litestar.testing import AsyncTestClient

    from backend.app import create_app

    app = create_app(load_settings(stack_env))
    async with AsyncTestClient(app=app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def isolated_env(redis_server: devstack.Process, s3_server: devstack.Process) -> dict[str, str]:
    """Env for a stack of this test's own: its own key prefix, queue and buckets."""
    return env_for(redis_server.url, s3_server.url, f"lh-t{os.getpid()}-{next(_counter)}")


@pytest.fixture
def settings(isolated_env: dict[str, str]) -> Settings:
    return load_settings(isolated_env)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    """Shared clients for this test's own stack, with the catalogue seeded."""
    opened = await Services.open(settings)
    await seed_catalogue(opened.storage)
    yield opened
    await opened.close()
