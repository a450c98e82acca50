"""POST /v1/download/{job_id}/retry on a real API, worker, Redis and S3 server: an ended job
tried again as a new job linked to it, with the page's rule and the POST's Idempotency-Key."""

from __future__ import annotations

import uuid

import httpx
import jwt

from backend.auth import TOKEN_PREFIX
from backend.models import JobRecord, JobState
from backend.services import Services
from backend.settings import load_settings
from tests.helpers import fetch, start, wait_for_status, zip_digests
from tests.stack import CATALOGUE_BY_ID

SECRET = "test-jwt-secret-of-at-least-32-bytes"


def token(subject: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode({"sub": subject}, SECRET, algorithm="HS256")}


async def test_a_failed_job_is_tried_again_as_a_new_linked_job(http: httpx.AsyncClient) -> None:
    failed = await start(http, [999_999])
    await wait_for_status(http, failed["job_id"], {"failed"})
    response = await http.post(f"/v1/download/{failed['job_id']}/retry")
    assert response.status_code == 202, response.text
    retried = response.json()
    assert retried["job_id"] != failed["job_id"]
    assert retried["retry_of"] == failed["job_id"]
    assert retried["status"] == "queued"
    assert retried["total_files"] == 1
    assert response.headers["location"] == f"/v1/download/status/{retried['job_id']}"
    ended = await wait_for_status(http, retried["job_id"], {"failed"})
    assert ended["retry_of"] == failed["job_id"]
    assert "none of the requested files exist" in ended["error"]
    # The old job is left as it ended.
    old = (await http.get(f"/v1/download/status/{failed['job_id']}")).json()
    assert old["status"] == "failed" and old["retry_of"] is None


async def test_a_cancelled_job_retried_builds_the_same_files(
    http: httpx.AsyncClient, stack_env: dict[str, str]
) -> None:
    subject = f"retrier-{uuid.uuid4().hex[:8]}"
    headers = token(subject)
    asked = [2, 5]
    # Cancelled before any worker took it, written as the API would leave it.
    services = await Services.open(load_settings(stack_env))
    try:
        old = JobRecord(
            job_id=uuid.uuid4().hex,
            owner=TOKEN_PREFIX + subject,
            file_ids=asked,
            total_files=len(asked),
            status=JobState.CANCELLED,
        )
        await services.store.create(old)
    finally:
        await services.close()
    async with httpx.AsyncClient(base_url=http.base_url, headers=headers) as mine:
        response = await mine.post(f"/v1/download/{old.job_id}/retry")
        assert response.status_code == 202, response.text
        ready = await wait_for_status(mine, response.json()["job_id"], {"ready", "failed"})
        assert ready["status"] == "ready", ready
        assert ready["retry_of"] == old.job_id
        archive = await fetch(ready["download_url"])
        expected = {CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in asked}
        assert zip_digests(archive) == expected
        # The new job is the caller's: listed newest first, linked to the old one.
        listed = (await mine.get("/v1/downloads")).json()["jobs"]
    assert [(j["job_id"], j["retry_of"]) for j in listed] == [
        (ready["job_id"], old.job_id),
        (old.job_id, None),
    ]


async def test_only_ended_jobs_that_did_not_succeed_can_be_retried(
    http: httpx.AsyncClient,
) -> None:
    ready = await start(http, [5])
    await wait_for_status(http, ready["job_id"], {"ready"})
    response = await http.post(f"/v1/download/{ready['job_id']}/retry")
    assert response.status_code == 409
    body = response.json()
    assert body["extra"] == {"status": "ready"}
    assert "only failed, cancelled or expired jobs can be tried again" in body["detail"]


async def test_retry_honours_the_idempotency_key(http: httpx.AsyncClient) -> None:
    failed = await start(http, [999_998])
    await wait_for_status(http, failed["job_id"], {"failed"})
    key = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    path = f"/v1/download/{failed['job_id']}/retry"
    first = await http.post(path, headers=key)
    again = await http.post(path, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["job_id"] == again.json()["job_id"]
    # The same key on another request (a plain POST of the same files) is refused.
    other = await http.post("/v1/download/async", json={"file_ids": [999_998]}, headers=key)
    assert other.status_code == 422
    bad = await http.post(path, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("Idempotency-Key: ")


async def test_unknown_or_anothers_job_is_404(http: httpx.AsyncClient) -> None:
    mine = token(f"owner-{uuid.uuid4().hex[:8]}")
    async with httpx.AsyncClient(base_url=http.base_url, headers=mine) as owner:
        job = await start(owner, [999_997])
        await wait_for_status(owner, job["job_id"], {"failed"})
    stranger = await http.post(
        f"/v1/download/{job['job_id']}/retry", headers=token(f"other-{uuid.uuid4().hex[:8]}")
    )
    assert stranger.status_code == 404
    for job_id in ("0" * 32, "not-a-job"):
        response = await http.post(f"/v1/download/{job_id}/retry")
        assert response.status_code == 404
        assert "no job with id" in response.json()["detail"]
