"""A job from POST to archive, through the real API process, worker, Redis and S3."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.helpers import collect_events, fetch, start, wait_for_status, zip_digests
from tests.stack import CATALOGUE_BY_ID


async def test_full_lifecycle_archive_matches_sources_byte_for_byte(
    http: httpx.AsyncClient,
) -> None:
    asked = [1, 2, 4, 6]
    created = await start(http, asked)
    assert created["status"] == "queued"
    assert created["progress"] == 0
    assert created["total_files"] == 4
    assert created["processed_files"] == 0

    events = await collect_events(http, created["job_id"])
    assert events[-1].event == "completed"
    status = await wait_for_status(http, created["job_id"], {"ready"})
    assert status["progress"] == 100
    assert status["processed_files"] == 4
    assert status["skipped_file_ids"] == []

    archive = await fetch(status["download_url"])
    expected = {CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in asked}
    assert zip_digests(archive) == expected
    assert zip_digests(await fetch(events[-1].data["download_url"])) == expected


async def test_post_answers_202_with_location_of_the_status(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/download/async", json={"file_ids": [5]})
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    assert response.headers["location"] == f"/v1/download/status/{job_id}"
    assert len(job_id) == 32
    followed = await http.get(response.headers["location"])
    assert followed.status_code == 200
    assert followed.json()["job_id"] == job_id


async def test_download_url_is_presigned_for_one_hour_on_the_public_endpoint(
    http: httpx.AsyncClient, stack_env: dict[str, str]
) -> None:
    created = await start(http, [5])
    status = await wait_for_status(http, created["job_id"], {"ready"})
    url = urlsplit(status["download_url"])
    query = parse_qs(url.query)
    assert f"{url.scheme}://{url.netloc}" == stack_env["S3_ENDPOINT"]
    shared = f"/{stack_env['S3_BUCKET_NAME']}/archives/sha256/[0-9a-f]{{64}}\\.zip"
    assert re.fullmatch(shared, url.path)
    job_name = "echo.zip"  # file 5, echo.log (archivenames.py)
    assert job_name in query["response-content-disposition"][0]
    assert query["X-Amz-Expires"] == ["3600"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Credential"][0].startswith("longhaul/")
    assert "X-Amz-Signature" in query
    assert "attachment" in query["response-content-disposition"][0]
    assert status["expires_at"] > status["finished_at"]
