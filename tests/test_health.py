"""/health reports each dependency; an outage is a 503 with a clear body, then it recovers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from backend import devstack
from backend.devstack import free_port
from backend.settings import load_settings
from backend.storage import Storage


async def test_health_is_200_when_every_dependency_answers(http: httpx.AsyncClient) -> None:
    response = await http.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "checks": {"api": "ok", "redis": "ok", "storage": "ok"},
    }


async def wait_health(client: httpx.AsyncClient, status_code: int) -> dict[str, object]:
    async def poll() -> dict[str, object]:
        while True:
            response = await client.get("/health")
            if response.status_code == status_code:
                body: dict[str, object] = response.json()
                return body
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(poll(), 20)


async def test_health_is_503_while_storage_is_down_and_recovers_after(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    s3_port = free_port()
    s3 = devstack.start_s3(tmp_path, s3_port)
    api = devstack.start_api({**isolated_env, "S3_ENDPOINT": s3.url}, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            assert (await wait_health(client, 200))["status"] == "healthy"
            s3.stop()
            down = await wait_health(client, 503)
            assert down == {
                "status": "unhealthy",
                "checks": {"api": "ok", "redis": "ok", "storage": "error"},
            }
            files = await client.get("/v1/files")
            assert files.status_code == 503
            assert "object storage" in files.json()["detail"]
            s3 = devstack.start_s3(tmp_path, s3_port)
            # moto keeps data in memory; a real S3 keeps its buckets across a restart.
            storage = Storage(load_settings({**isolated_env, "S3_ENDPOINT": s3.url}))
            await storage.open()
            await storage.ensure_buckets()
            await storage.close()
            assert (await wait_health(client, 200))["checks"] == {
                "api": "ok",
                "redis": "ok",
                "storage": "ok",
            }
    finally:
        api.stop()
        s3.stop()


async def test_health_is_503_and_api_answers_503_json_while_redis_is_down(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    redis_port = free_port()
    redis = devstack.start_redis(tmp_path / "redis", redis_port)
    api = devstack.start_api({**isolated_env, "REDIS_URL": redis.url}, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            assert (await wait_health(client, 200))["status"] == "healthy"
            redis.stop()
            down = await wait_health(client, 503)
            assert down["checks"] == {"api": "ok", "redis": "error", "storage": "ok"}
            started = await client.post("/v1/download/async", json={"file_ids": [1]})
            assert started.status_code == 503
            assert "Redis" in started.json()["detail"]
            assert started.headers["retry-after"]
            status = await client.get(f"/v1/download/status/{'a' * 32}")
            assert status.status_code == 503
            redis = devstack.start_redis(tmp_path / "redis", redis_port)
            await wait_health(client, 200)
            again = await client.post("/v1/download/async", json={"file_ids": [1]})
            assert again.status_code == 202
    finally:
        api.stop()
        redis.stop()
