"""Privacy, authentication, headers and per-client limits, against real API processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from backend import devstack
from backend.services import Services
from tests.helpers import start, wait_for_status

SECRET = "test-jwt-secret-of-at-least-32-bytes"


def token(subject: str, secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode({"sub": subject}, secret, algorithm="HS256")}


async def test_another_owners_job_is_404_on_every_route(http: httpx.AsyncClient) -> None:
    alice, bob = token("alice"), token("bob")
    created = await start(http, [5], headers=alice)
    job = created["job_id"]
    assert (await http.get(f"/v1/download/status/{job}", headers=alice)).status_code == 200
    for headers in (bob, {}):
        for method, path in (
            ("GET", f"/v1/download/status/{job}"),
            ("GET", f"/v1/download/subscribe/{job}"),
            ("DELETE", f"/v1/download/{job}"),
        ):
            response = await http.request(method, path, headers=headers)
            assert response.status_code == 404, (method, path, headers)
            assert "no job with id" in response.json()["detail"]


async def test_bad_tokens_are_401_naming_the_problem(http: httpx.AsyncClient) -> None:
    cases = [
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer"),
        ({"Authorization": "Bearer"}, "Bearer"),
        ({"Authorization": "Bearer not.a.jwt"}, "invalid bearer token"),
        (
            token("alice", secret="someone-elses-secret-of-32-bytes-or-more"),
            "Signature verification failed",
        ),
        (
            {"Authorization": "Bearer " + jwt.encode({"x": 1}, SECRET, algorithm="HS256")},
            "sub",
        ),
        (
            {"Authorization": "Bearer " + jwt.encode({"sub": "a", "exp": 1}, SECRET)},
            "expired",
        ),
    ]
    for headers, says in cases:
        response = await http.post("/v1/download/async", json={"file_ids": [5]}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert says in response.json()["detail"], response.json()


async def test_responses_carry_security_headers_and_hsts_only_behind_tls(
    http: httpx.AsyncClient,
) -> None:
    plain = await http.get("/v1/files")
    assert plain.headers["x-content-type-options"] == "nosniff"
    assert plain.headers["x-frame-options"] == "DENY"
    assert plain.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "script-src 'self'" in plain.headers["content-security-policy"]
    assert "strict-transport-security" not in plain.headers
    # Our client is the trusted proxy (127.0.0.1), telling the app the user came over TLS.
    behind_tls = await http.get("/v1/files", headers={"X-Forwarded-Proto": "https"})
    assert behind_tls.headers["strict-transport-security"].startswith("max-age=")


async def test_archive_name_is_safe_in_content_disposition(http: httpx.AsyncClient) -> None:
    created = await start(http, [4])
    status = await wait_for_status(http, created["job_id"], {"ready"})
    disposition = parse_qs(urlsplit(status["download_url"]).query)["response-content-disposition"][
        0
    ]
    # Named after its one file, "délta résumé.pdf": UTF-8 per RFC 6266, with an ASCII fallback.
    assert disposition == (
        'attachment; filename="d_lta-r_sum_.zip"; '
        "filename*=UTF-8''d%C3%A9lta-r%C3%A9sum%C3%A9.zip"
    )
    async with httpx.AsyncClient() as client:
        response = await client.get(status["download_url"])
    assert response.headers["content-disposition"] == disposition


@pytest.fixture(params=["8"])
def limited_api(
    request: pytest.FixtureRequest,
    isolated_env: dict[str, str],
    services: Services,
    tmp_path: Path,
) -> Iterator[list[devstack.Process]]:
    env = {
        **isolated_env,
        "RATE_LIMIT_PER_MINUTE": request.param,
        "MAX_ACTIVE_JOBS_PER_CLIENT": "2",
        "MAX_STREAMS_PER_CLIENT": "2",
    }
    processes = [devstack.start_api(env, tmp_path, name=f"api{n}") for n in (1, 2)]
    yield processes
    for process in processes:
        process.stop()


async def test_rate_limit_is_shared_by_api_processes_and_says_when_to_retry(
    limited_api: list[devstack.Process],
) -> None:
    first, second = limited_api
    async with httpx.AsyncClient(timeout=10) as client:
        answers = []
        for n in range(10):
            api = first if n % 2 == 0 else second
            answers.append(await client.get(f"{api.url}/v1/files"))
    assert [a.status_code for a in answers[:8]] == [200] * 8
    assert [int(a.headers["ratelimit-remaining"]) for a in answers[:8]] == list(range(7, -1, -1))
    assert all(a.headers["ratelimit-limit"] == "8" for a in answers)
    limited = answers[8]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 61
    assert "rate limit exceeded" in limited.json()["detail"]
    # Health is never limited: load balancers must always get through.
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{first.url}/health")).status_code == 200


@pytest.mark.parametrize("limited_api", ["1000"], indirect=True)
async def test_active_jobs_and_open_streams_are_capped_per_client(
    limited_api: list[devstack.Process],
) -> None:
    api = limited_api[0]
    # No worker runs on this stack: jobs stay queued, which is "active".
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        jobs = [await start(client, [1]) for _ in range(2)]
        third = await client.post("/v1/download/async", json={"file_ids": [1]})
        assert third.status_code == 429
        assert "too many active jobs" in third.json()["detail"]
        assert third.headers["retry-after"]

        async with (
            client.stream("GET", f"/v1/download/subscribe/{jobs[0]['job_id']}") as one,
            client.stream("GET", f"/v1/download/subscribe/{jobs[1]['job_id']}") as two,
        ):
            assert one.status_code == two.status_code == 200
            extra = await client.get(f"/v1/download/subscribe/{jobs[0]['job_id']}")
            assert extra.status_code == 429
            assert "too many open event streams" in extra.json()["detail"]

        # Both streams are closed: their slots come free as the server notices the hang-up.
        async def reopen() -> int:
            while True:
                path = f"/v1/download/subscribe/{jobs[0]['job_id']}"
                async with client.stream("GET", path) as again:
                    if again.status_code == 200:
                        return again.status_code
                await asyncio.sleep(0.1)

        assert await asyncio.wait_for(reopen(), 10) == 200


async def test_auth_can_be_required_for_the_api(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    api = devstack.start_api({**isolated_env, "API_AUTH_REQUIRED": "true"}, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            anonymous = await client.post("/v1/download/async", json={"file_ids": [1]})
            assert anonymous.status_code == 401
            assert "token is required" in anonymous.json()["detail"]
            with_token = await client.post(
                "/v1/download/async", json={"file_ids": [1]}, headers=token("carol")
            )
            assert with_token.status_code == 202
    finally:
        api.stop()


async def test_cors_allows_only_configured_origins(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    env = {**isolated_env, "CORS_ALLOW_ORIGINS": "https://app.example.com"}
    api = devstack.start_api(env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            allowed = await client.options(
                "/v1/download/async",
                headers={
                    "Origin": "https://app.example.com",
                    "Access-Control-Request-Method": "POST",
                },
            )
            assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
            other = await client.get("/v1/files", headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers
    finally:
        api.stop()
