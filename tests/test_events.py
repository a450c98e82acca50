"""SSE streams: resume with Last-Event-ID, late subscribers, keep-alives, one reader a process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from backend import devstack
from backend.downloads import start_job
from backend.events import EventHub
from backend.services import Services
from tests.helpers import collect_events, start, wait_for_status


async def test_resume_after_last_event_id_misses_nothing_and_repeats_nothing(
    http: httpx.AsyncClient,
) -> None:
    created = await start(http, [8, 2])
    everything = await collect_events(http, created["job_id"])
    assert everything[-1].event == "completed"
    assert len(everything) >= 4
    for cut in range(len(everything) - 1):
        resumed = await collect_events(http, created["job_id"], last_event_id=everything[cut].id)
        assert [e.id for e in resumed] == [e.id for e in everything[cut + 1 :]]


async def test_resume_while_the_job_runs_joins_history_to_live_events(
    http: httpx.AsyncClient,
) -> None:
    created = await start(http, [8, 2, 3])
    first = await collect_events(http, created["job_id"], limit=2)
    rest = await collect_events(http, created["job_id"], last_event_id=first[-1].id)
    complete = await collect_events(http, created["job_id"])
    assert [e.id for e in first + rest] == [e.id for e in complete]


async def test_late_subscriber_gets_history_and_terminal_event_then_the_stream_closes(
    http: httpx.AsyncClient,
) -> None:
    created = await start(http, [5])
    await wait_for_status(http, created["job_id"], {"ready"})
    async with http.stream("GET", f"/v1/download/subscribe/{created['job_id']}") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        body = await asyncio.wait_for(response.aread(), 10)  # returns: the server closed it
    text = body.decode()
    assert text.count("event: progress") >= 2
    assert text.rstrip().endswith("}")
    assert "event: completed" in text
    assert '"download_url":"http' in text


async def test_unknown_and_malformed_ids_are_404_and_bad_last_event_id_is_400(
    http: httpx.AsyncClient,
) -> None:
    missing = await http.get(f"/v1/download/subscribe/{'0' * 32}")
    assert missing.status_code == 404
    assert "no job with id" in missing.json()["detail"]
    malformed = await http.get("/v1/download/subscribe/not-a-job")
    assert malformed.status_code == 404
    created = await start(http, [5])
    bad = await http.get(
        f"/v1/download/subscribe/{created['job_id']}", headers={"Last-Event-ID": "yesterday"}
    )
    assert bad.status_code == 400
    assert "Last-Event-ID" in bad.json()["detail"]


async def test_idle_stream_gets_a_comment_ping(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    # No worker runs for this stack, so the job stays queued and the stream stays idle.
    api = devstack.start_api({**isolated_env, "SSE_PING_SECONDS": "0.5"}, tmp_path)
    try:
        record = await start_job(services, [1], "public")
        async with (
            httpx.AsyncClient(base_url=api.url) as client,
            client.stream("GET", f"/v1/download/subscribe/{record.job_id}") as response,
        ):
            seen = b""
            async for chunk in response.aiter_bytes():
                seen += chunk
                if seen.count(b": ping") >= 2:
                    break
        assert b"event: progress" in seen
    finally:
        api.stop()


async def test_many_subscribers_share_one_redis_reader_per_process(
    http: httpx.AsyncClient, api_server: devstack.Process, redis_server: devstack.Process
) -> None:
    created = await start(http, [8, 2, 3, 4])
    results = await asyncio.gather(*(collect_events(http, created["job_id"]) for _ in range(25)))
    reference = [e.id for e in results[0]]
    assert all([e.id for e in r] == reference for r in results)
    client = aioredis.from_url(redis_server.url)
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    readers = [c for c in clients if c.get("name") == f"longhaul-events-{api_server.popen.pid}"]
    assert len(readers) == 1, [(c.get("name"), c.get("cmd")) for c in clients]


async def test_hub_resyncs_from_the_stream_after_losing_redis(services: Services) -> None:
    hub = EventHub(services.listener, services.store)
    await hub.start()
    try:
        await asyncio.wait_for(hub.connected.wait(), 5)
        record = await start_job(services, [1], "public")
        stream = hub.subscribe(record.job_id, idle_seconds=0.2)
        first = await anext(stream)
        assert first is not None and first.event == "progress"
        # Drop the reader's connection under it; events written meanwhile must still arrive.
        await services.redis.client_kill_filter(_type="pubsub", skipme=True)
        record.progress = 42
        await services.store.save_progress(record)
        received = None
        while received is None:
            received = await asyncio.wait_for(anext(stream), 10)
        assert '"progress":42' in received.data
        await stream.aclose()
    finally:
        await hub.stop()
