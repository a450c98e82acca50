"""GET /v1/downloads on a real API, Redis and S3 server: a caller's jobs, newest first, a page
at a time, filtered by status, with cursors that stay put while new jobs arrive."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest

from backend.jobs import JobStore
from backend.listing import Cursor, decode_cursor, encode_cursor, list_jobs
from backend.models import JobRecord, JobState
from backend.services import Services
from tests.helpers import start

SECRET = "test-jwt-secret-of-at-least-32-bytes"


def owner_headers() -> dict[str, str]:
    """A bearer token of an owner no other test uses."""
    subject = f"lister-{uuid.uuid4().hex[:12]}"
    return {"Authorization": "Bearer " + jwt.encode({"sub": subject}, SECRET, algorithm="HS256")}


async def started(client: httpx.AsyncClient, headers: dict[str, str], count: int) -> list[str]:
    """Ids of `count` new jobs, oldest first."""
    return [(await start(client, [1], headers=headers))["job_id"] for _ in range(count)]


async def listed(client: httpx.AsyncClient, headers: dict[str, str], **query: Any) -> Any:
    response = await client.get("/v1/downloads", params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response


async def test_anonymous_callers_are_told_a_token_is_needed(
    app_client: httpx.AsyncClient,
) -> None:
    await start(app_client, [1])
    response = await app_client.get("/v1/downloads")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"].startswith("Authorization: listing jobs needs a bearer token")


async def test_pages_run_newest_first_and_link_to_the_next(app_client: httpx.AsyncClient) -> None:
    headers = owner_headers()
    ids = await started(app_client, headers, 5)
    first = await listed(app_client, headers, limit=2)
    body = first.json()
    assert [job["job_id"] for job in body["jobs"]] == ids[:-3:-1]
    # Each item is what the status route says of the job: the same shape, the same job. A
    # worker of this stack may take the job between the two reads, so only what a job keeps
    # for life must be equal; its progress and place in the queue move.
    for job in body["jobs"]:
        status = (await app_client.get(job["status_url"], headers=headers)).json()
        assert set(job) == set(status)
        lifelong = ("job_id", "status_url", "created_at", "max_attempts", "on_missing", "name")
        assert {k: job[k] for k in lifelong} == {k: status[k] for k in lifelong}
    cursor = body["next_cursor"]
    assert first.headers["link"] == f'</v1/downloads?limit=2&cursor={cursor}>; rel="next"'

    second = await app_client.get(first.headers["link"][1:].split(">")[0], headers=headers)
    assert [job["job_id"] for job in second.json()["jobs"]] == [ids[2], ids[1]]
    last = (await listed(app_client, headers, limit=2, cursor=second.json()["next_cursor"])).json()
    assert [job["job_id"] for job in last["jobs"]] == [ids[0]]
    assert last["next_cursor"] is None
    everything = await listed(app_client, headers)
    assert [job["job_id"] for job in everything.json()["jobs"]] == ids[::-1]
    assert everything.json()["next_cursor"] is None
    assert "link" not in everything.headers


async def test_a_cursor_is_stable_while_new_jobs_arrive(app_client: httpx.AsyncClient) -> None:
    headers = owner_headers()
    ids = await started(app_client, headers, 4)
    first = (await listed(app_client, headers, limit=2)).json()
    newer = await started(app_client, headers, 3)
    second = (await listed(app_client, headers, limit=2, cursor=first["next_cursor"])).json()
    # Exactly the two older jobs: nothing shifted in by the three new ones, nothing repeated.
    assert [job["job_id"] for job in second["jobs"]] == [ids[1], ids[0]]
    assert second["next_cursor"] is None
    fresh = (await listed(app_client, headers, limit=3)).json()
    assert [job["job_id"] for job in fresh["jobs"]] == newer[::-1]


async def test_status_filter_takes_repeats_and_commas(app_client: httpx.AsyncClient) -> None:
    headers = owner_headers()
    ids = await started(app_client, headers, 5)
    for job_id in (ids[0], ids[3]):
        cancelled = await app_client.delete(f"/v1/download/{job_id}", headers=headers)
        assert cancelled.status_code == 200
    only = (await listed(app_client, headers, status="cancelled")).json()
    assert [job["job_id"] for job in only["jobs"]] == [ids[3], ids[0]]
    assert {job["status"] for job in only["jobs"]} == {"cancelled"}
    paged = await listed(app_client, headers, status="cancelled", limit=1)
    assert [job["job_id"] for job in paged.json()["jobs"]] == [ids[3]]
    assert "status=cancelled" in paged.headers["link"]
    following = await app_client.get(paged.headers["link"][1:].split(">")[0], headers=headers)
    assert [job["job_id"] for job in following.json()["jobs"]] == [ids[0]]
    assert following.json()["next_cursor"] is None
    both = await app_client.get(
        "/v1/downloads?status=cancelled&status=queued,processing", headers=headers
    )
    assert len(both.json()["jobs"]) == 5
    none = (await listed(app_client, headers, status="ready")).json()
    assert none == {"jobs": [], "next_cursor": None}


async def test_only_the_callers_own_jobs_are_listed(app_client: httpx.AsyncClient) -> None:
    alice, bob = owner_headers(), owner_headers()
    mine = await started(app_client, alice, 2)
    await started(app_client, bob, 1)
    await start(app_client, [1])  # anonymous: the public owner
    body = (await listed(app_client, alice)).json()
    assert [job["job_id"] for job in body["jobs"]] == mine[::-1]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("status=ready,Queued", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b'[1.5, "x"]').decode(), "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b'{"a": 1}').decode(), "cursor"),
        (
            "cursor=" + base64.urlsafe_b64encode(b"[NaN, " + b'"' + b"a" * 32 + b'"]').decode(),
            "cursor",
        ),
        ("cursor=", "cursor"),
    ],
)
async def test_bad_query_is_400_naming_the_field(
    app_client: httpx.AsyncClient, query: str, field: str
) -> None:
    response = await app_client.get(f"/v1/downloads?{query}", headers=owner_headers())
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(f"{field}: "), response.json()


def test_cursors_round_trip_and_are_opaque_text() -> None:
    cursor = Cursor(1795917627.123456, "3f2b8c1e9d7a4b6c8e0f1a2b3c4d5e6f")
    text = encode_cursor(cursor)
    assert text.isascii() and "=" not in text and "/" not in text and "+" not in text
    assert decode_cursor(text) == cursor


async def test_jobs_created_at_the_same_instant_are_each_listed_once(
    services: Services,
) -> None:
    store = services.store
    now = time.time()
    ids = sorted(uuid.uuid4().hex for _ in range(5))
    for job_id in ids:
        await store.create(JobRecord(job_id=job_id, owner="twins", file_ids=[1], created_at=now))
    seen: list[str] = []
    after = None
    while True:
        page = await list_jobs(store, "twins", limit=2, after=after)
        seen += [record.job_id for record in page.records]
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert seen == ids[::-1]


async def test_expired_records_are_skipped_and_trimmed_from_the_index(
    services: Services,
) -> None:
    store = JobStore(services.redis, prefix=services.store.prefix, ttl_seconds=100)
    now = time.time()
    old = JobRecord(job_id="a" * 32, owner="forgetful", file_ids=[1], created_at=now - 500)
    gone = JobRecord(job_id="b" * 32, owner="forgetful", file_ids=[1], created_at=now - 10)
    await store.create(old)
    await store.create(gone)
    await services.redis.delete(store.record_key(gone.job_id))  # as when its TTL ran out
    kept = JobRecord(
        job_id="c" * 32, owner="forgetful", file_ids=[1], created_at=now, status=JobState.QUEUED
    )
    await store.create(kept)
    page = await list_jobs(store, "forgetful")
    assert [record.job_id for record in page.records] == [kept.job_id]
    assert page.next_cursor is None
    # The entry older than the records' TTL left the index when the newest job was written.
    indexed = await services.redis.zrange(store.owner_key("forgetful"), 0, -1)
    assert sorted(i.decode() for i in indexed) == [gone.job_id, kept.job_id]
