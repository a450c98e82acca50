"""HTTP edges: what every answer shares, routed or not; HEAD; JSON bodies; CORS; cheap /health.

Each test runs against real API processes: the session's, or a stack of its own when it needs
tight limits, CORS or a dependency it can stop.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from backend import devstack
from backend.services import Services
from tests.helpers import start
from tests.test_request_id import access_line, is_uuid

SECURITY_HEADERS = ("x-content-type-options", "x-frame-options", "content-security-policy")
ORIGIN = "https://app.example.com"


@contextmanager
def own_api(env: dict[str, str], tmp_path: Path, **extra: str) -> Iterator[str]:
    """The URL of an API process of the test's own, with `extra` settings."""
    api = devstack.start_api({**env, **extra}, tmp_path)
    try:
        yield api.url
    finally:
        api.stop()


async def fresh_rate_window() -> None:
    """Wait out the current minute when it is nearly over: the limit's window is fixed."""
    left = 60 - time.time() % 60
    if left < 5:
        await asyncio.sleep(left + 0.2)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nope", 404), ("DELETE", "/v1/files", 405), ("PUT", "/", 405)],
)
async def test_unrouted_answers_carry_request_id_security_and_rate_limit_headers(
    http: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await http.request(method, path, headers={"X-Request-ID": "edge-1"})
    assert response.status_code == status
    assert response.headers["x-request-id"] == "edge-1"
    for name in SECURITY_HEADERS:
        assert name in response.headers, name
    assert int(response.headers["ratelimit-limit"]) > 0
    assert "ratelimit-remaining" in response.headers
    assert response.json()["status_code"] == status


async def test_unrouted_answers_get_an_access_line(
    http: httpx.AsyncClient, api_server: devstack.Process
) -> None:
    request_id = f"edge-{uuid.uuid4().hex}"
    await http.get("/no/such/page", headers={"X-Request-ID": request_id})
    entry = await access_line(api_server, request_id)
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/no/such/page", 404)


async def test_a_browser_navigating_to_an_unknown_page_gets_html_with_the_same_headers(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/no/such/page", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert is_uuid(response.headers["x-request-id"])


async def test_unknown_paths_count_against_the_rate_limit(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    with own_api(isolated_env, tmp_path, RATE_LIMIT_PER_MINUTE="5") as url:
        await fresh_rate_window()
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            # "/healthz" looks like the exempt "/health" but is just another unknown path.
            paths = ["/nope", "/healthz", "/nope", "/v1/nope", "/docsx", "/nope", "/nope"]
            answers = [await client.get(path) for path in paths]
    assert [a.status_code for a in answers] == [404] * 5 + [429] * 2
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert answers[-1].headers["x-request-id"]


async def test_head_answers_like_get_without_a_body(http: httpx.AsyncClient) -> None:
    created = await start(http, [5])
    # Answers that do not change between two requests: the same length, byte for byte.
    unchanging = ["/health", "/v1/files", "/static/app.css", "/docs/openapi.json"]
    unchanging.append("/v1/download/status/" + "0" * 32)
    # A page and a job in progress: the same status and type.
    moving = ["/", f"/v1/download/status/{created['job_id']}"]
    for path in unchanging + moving:
        get, head = await http.get(path), await http.head(path)
        assert head.status_code == get.status_code, path
        assert head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
        assert is_uuid(head.headers["x-request-id"]), path
        assert "x-content-type-options" in head.headers, path
        if path in unchanging:
            assert head.headers["content-length"] == get.headers["content-length"], path


async def test_head_is_refused_where_get_is_and_listed_where_get_is_allowed(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.head("/v1/download/async")).status_code == 405
    wrong_method = await http.delete("/v1/files")
    assert wrong_method.status_code == 405
    assert "HEAD" in {m.strip() for m in wrong_method.headers["allow"].split(",")}


async def test_head_on_event_streams_answers_their_headers_and_frees_the_slot(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    # No worker: the job stays queued, so its streams would run until cancelled.
    with own_api(isolated_env, tmp_path, MAX_STREAMS_PER_CLIENT="2") as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            job = (await start(client, [1]))["job_id"]
            stream_path = f"/v1/download/subscribe/{job}"

            async def past_the_cap(method: str, path: str) -> httpx.Response:
                # A HEAD's answer is out a moment before its slot is given back.
                while True:
                    async with client.stream(method, path) as answer:
                        if method == "HEAD":
                            await answer.aread()
                        if answer.status_code != 429:
                            return answer
                    await asyncio.sleep(0.05)

            for path in [stream_path, f"/events?jobs={job}"] * 3:
                head = await asyncio.wait_for(past_the_cap("HEAD", path), 5)
                assert head.status_code == 200, path
                assert head.headers["content-type"].startswith("text/event-stream"), path
                assert head.content == b""
            # Six HEADs on a cap of two: each gave its slot back, so a real stream opens.
            opened = await asyncio.wait_for(past_the_cap("GET", stream_path), 5)
            assert opened.status_code == 200


@pytest.mark.parametrize(
    "body",
    [b"[" * 1000 + b"]" * 1000, b'{"file_ids": ' + b"[" * 1000 + b"]" * 1000 + b"}"],
    ids=["bare", "in-file-ids"],
)
async def test_json_nested_a_thousand_deep_is_a_400_naming_it(
    http: httpx.AsyncClient, api_server: devstack.Process, body: bytes
) -> None:
    request_id = f"deep-{uuid.uuid4().hex}"
    response = await http.post(
        "/v1/download/async",
        content=body,
        headers={"content-type": "application/json", "X-Request-ID": request_id},
    )
    assert response.status_code == 400, response.text
    assert "nested too deeply" in response.json()["detail"]
    await access_line(api_server, request_id)  # the request is over, and logged
    assert api_server.log_path is not None
    logged = [line for line in api_server.log_path.read_text().splitlines() if request_id in line]
    assert not any('"level": "error"' in line for line in logged), logged


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/x+json",
    ],
)
async def test_json_bodies_typed_as_json_are_accepted(
    http: httpx.AsyncClient, content_type: str
) -> None:
    response = await http.post(
        "/v1/download/async", content=b'{"file_ids": [5]}', headers={"content-type": content_type}
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/x+json", "multipart/form-data"])
async def test_json_bodies_not_typed_as_json_are_415_naming_the_type(
    http: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = await http.post("/v1/download/async", content=b'{"file_ids": [5]}', headers=headers)
    assert response.status_code == 415, response.text
    assert "Content-Type must be application/json" in response.json()["detail"]


@pytest.fixture
async def cors_api(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    with own_api(
        isolated_env, tmp_path, CORS_ALLOW_ORIGINS=ORIGIN, RATE_LIMIT_PER_MINUTE="3"
    ) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield client


def exposed(response: httpx.Response) -> set[str]:
    return {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}


async def test_cors_pages_can_read_request_id_and_rate_limit_headers(
    cors_api: httpx.AsyncClient,
) -> None:
    await fresh_rate_window()
    answer = await cors_api.get("/v1/files", headers={"Origin": ORIGIN})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    sent = {name for name in answer.headers if name.startswith("ratelimit-")}
    assert len(sent) == 3
    assert sent | {"x-request-id", "retry-after", "location", "link"} <= exposed(answer)


async def test_cors_pages_can_read_a_429_and_its_retry_after(cors_api: httpx.AsyncClient) -> None:
    await fresh_rate_window()
    answers = [await cors_api.get("/nope", headers={"Origin": ORIGIN}) for _ in range(4)]
    refused = answers[-1]
    assert refused.status_code == 429
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert "retry-after" in exposed(refused)
    assert int(refused.headers["retry-after"]) >= 1


async def test_cors_preflight_allows_json_posts_from_the_origin_only(
    cors_api: httpx.AsyncClient,
) -> None:
    asked = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    allowed = await cors_api.options("/v1/download/async", headers={"Origin": ORIGIN, **asked})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "Content-Type" in allowed.headers["access-control-allow-headers"]
    other = await cors_api.options(
        "/v1/download/async", headers={"Origin": "https://evil.example", **asked}
    )
    assert "access-control-allow-origin" not in other.headers


def s3_requests(s3: devstack.Process) -> int:
    """How many requests moto's server has logged (one line per request)."""
    assert s3.log_path is not None
    return sum(' HTTP/1.1" ' in line for line in s3.log_path.read_text().splitlines())


async def redis_pings(url: str) -> int:
    client = Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


async def test_health_probes_each_dependency_about_once_a_second_and_still_sees_an_outage(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    s3 = devstack.start_s3(tmp_path / "s3")
    redis = devstack.start_redis(tmp_path / "redis")
    env = {**isolated_env, "S3_ENDPOINT": s3.url, "REDIS_URL": redis.url}
    try:
        with own_api(env, tmp_path) as url:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                assert (await client.get("/health")).status_code == 200
                s3_before, pings_before = s3_requests(s3), await redis_pings(redis.url)
                started = time.monotonic()
                burst = await asyncio.gather(*(client.get("/health") for _ in range(100)))
                while time.monotonic() - started < 1.5 or len(burst) < 200:
                    burst.append(await client.get("/health"))
                assert {r.status_code for r in burst} == {200}
                # At most one probe per second begun, and the one cached before the burst.
                allowed = math.ceil(time.monotonic() - started) + 1
                assert s3_requests(s3) - s3_before <= allowed
                assert await redis_pings(redis.url) - pings_before <= allowed

                s3.stop()
                stopped = time.monotonic()
                while (await client.get("/health")).status_code != 503:
                    assert time.monotonic() - stopped < 5, "outage not reported within 5 s"
                    await asyncio.sleep(0.05)
    finally:
        s3.stop()
        redis.stop()
