"""Webhooks end to end: a real API and worker on real Redis and S3 POST every terminal event
to a real local receiver, which verifies each signature with the Standard Webhooks library."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import re
import socket
import sys
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import msgspec
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook, WebhookVerificationError

from backend import devstack
from backend.expiry import sweep_expired_archives
from backend.jobevents import ended_event, failed_event
from backend.models import JobRecord, JobState
from backend.seed import DEMO_FILES, seed_demo
from backend.services import Services
from backend.settings import load_settings
from backend.storage import Storage
from backend.webhooks.delivery import client_for, send
from backend.webhooks.outbox import Outbox, member, outbox_key
from backend.webhooks.records import DeliveryState, WebhookDelivery
from backend.webhooks.sender import run_sender, stop_sender
from tests.helpers import eventually, fetch, wait_for_status, zip_digests
from tests.stack import CATALOGUE_BY_ID, env_for, seed_stack

SECRET = "whsec_" + base64.b64encode(b"longhaul-webhook-test-key-32-by").decode()
# Short enough to see a delivery given up in a test: attempts at 0 s, 1 s and 3 s after the
# event, and the next (at 7 s) would fall past it.
RETRY_FOR_SECONDS = 6


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any]


@dataclass
class Receiver:
    """An HTTP server on a free loopback port that verifies every request's signature and
    answers each path with the status the test set (204 by default)."""

    port: int = field(default_factory=devstack.free_port)
    answers: dict[str, int] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        try:
            payload = Webhook(SECRET).verify(body, headers)
        except WebhookVerificationError as exc:
            self.refused.append(str(exc))
            return web.Response(status=401)
        self.received.append(Received(request.path, headers, body, payload))
        return web.Response(status=self.answers.get(request.path, 204))

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


class SlowReceiver:
    """A hostile receiver on a free loopback port, verifying nothing: /drip answers 500 and
    then a body that never ends, a byte every DRIP_SECONDS (each well inside any per-read
    timeout); /huge answers 500 with a body of HUGE_BYTES. It counts the requests it is
    answering at once."""

    DRIP_SECONDS = 0.2
    HUGE_BYTES = 64 << 20

    def __init__(self) -> None:
        self.port = devstack.free_port()
        self.dripping = asyncio.Event()
        self.requests = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/drip", self._drip)
        app.router.add_post("/huge", self._huge)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _drip(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            response = web.StreamResponse(status=500)
            await response.prepare(request)
            self.dripping.set()
            while True:  # until the sender hangs up: then the write raises
                await response.write(b"x")
                await asyncio.sleep(self.DRIP_SECONDS)
        finally:
            self.in_flight -= 1

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests += 1
        response = web.StreamResponse(status=500)
        await response.prepare(request)
        chunk = b"y" * (1 << 20)
        for _ in range(self.HUGE_BYTES >> 20):
            await response.write(chunk)
        await response.write_eof()
        return response


@pytest.fixture(scope="module")
async def webhook_env(
    redis_server: devstack.Process, s3_server: devstack.Process
) -> dict[str, str]:
    env = env_for(
        redis_server.url,
        s3_server.url,
        f"lh-webhooks-{time.monotonic_ns()}",
        WEBHOOK_SECRET=SECRET,
        # The operator's exception for this test's receiver: loopback is refused otherwise.
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        WEBHOOK_RETRY_FOR_SECONDS=str(RETRY_FOR_SECONDS),
        WEBHOOK_TIMEOUT_SECONDS="2",
        # The worker's own metrics endpoint: delivery outcomes are counted there.
        METRICS_PORT=str(devstack.free_port()),
        # Slow enough that a job on the 6 MiB file is still running when it is cancelled.
        THROTTLE_BYTES_PER_SECOND=str(1024 * 1024),
    )
    await seed_stack(env)
    return env


@pytest.fixture(scope="module")
def webhook_stack(webhook_env: dict[str, str], state_dir: Path) -> Iterator[devstack.Process]:
    """The API and one worker of the webhook stack; yields the API."""
    logs = state_dir / "webhook-logs"
    api = devstack.start_api(webhook_env, logs, name="webhook-api")
    try:
        worker = devstack.start_worker(webhook_env, logs, name="webhook-worker")
    except BaseException:
        api.stop()
        raise
    yield api
    worker.stop()
    api.stop()


@pytest.fixture
async def api(webhook_stack: devstack.Process) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=webhook_stack.url, timeout=30) as client:
        yield client


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def slow_receiver() -> AsyncIterator[SlowReceiver]:
    running = SlowReceiver()
    await running.start()
    yield running
    await running.stop()


async def deliveries(api: httpx.AsyncClient, job_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The job's `webhook_deliveries` once `count` of them have stopped being pending."""
    body = await eventually(
        lambda: _status(api, job_id),
        lambda s: sum(d["state"] != "pending" for d in s["webhook_deliveries"]) >= count,
        timeout=30,
    )
    found: list[dict[str, Any]] = body["webhook_deliveries"]
    return found


async def _status(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await api.get(f"/v1/download/status/{job_id}")).json()
    return body


def only(received: list[Received]) -> Received:
    assert len(received) == 1, received
    return received[0]


async def test_completed_job_delivers_a_signed_event_with_a_working_link(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    job = await _start(api, [1, 5], receiver.url("/done?token=s3cr3t"))
    assert job["callback_url"] == receiver.url("/…?token=…")

    [delivery] = await deliveries(api, job["job_id"])
    hook = only(receiver.on("/done"))
    assert hook.headers["webhook-id"] == delivery["webhook_id"] == f"msg_{job['job_id']}_completed"
    assert hook.payload["type"] == "job.completed"
    data = hook.payload["data"]
    assert (data["job_id"], data["status"], data["total_files"]) == (job["job_id"], "ready", 2)
    # The link in the event is a real, presigned one: the archive downloads from it.
    digests = zip_digests(await fetch(data["download_url"]))
    assert digests == {CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in (1, 5)}
    assert delivery["state"] == "delivered"
    assert delivery["attempts"] == 1 and delivery["last_status_code"] == 204
    assert delivery["delivered_at"] >= delivery["created_at"]
    assert delivery["url"] == receiver.url("/…?token=…")
    assert receiver.refused == []


async def _start(api: httpx.AsyncClient, file_ids: list[int], callback_url: str) -> dict[str, Any]:
    response = await api.post(
        "/v1/download/async", json={"file_ids": file_ids, "callback_url": callback_url}
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_failed_job_delivers_its_error(api: httpx.AsyncClient, receiver: Receiver) -> None:
    job = await _start(api, [999], receiver.url("/failed"))
    [delivery] = await deliveries(api, job["job_id"])
    hook = only(receiver.on("/failed"))
    assert hook.payload["type"] == "job.failed"
    assert hook.payload["data"]["status"] == "failed"
    assert "none of the requested files exist" in hook.payload["data"]["error"]
    assert delivery["state"] == "delivered"


async def test_cancelled_job_delivers_cancelled(api: httpx.AsyncClient, receiver: Receiver) -> None:
    job = await _start(api, [8], receiver.url("/cancelled"))
    cancel = await api.delete(f"/v1/download/{job['job_id']}")
    assert cancel.status_code == 200, cancel.text
    [delivery] = await deliveries(api, job["job_id"])
    hook = only(receiver.on("/cancelled"))
    assert hook.payload["type"] == "job.cancelled"
    assert hook.payload["data"] == {
        "job_id": job["job_id"],
        "status": "cancelled",
        "status_url": f"/v1/download/status/{job['job_id']}",
    }
    assert delivery["event"] == "cancelled" and delivery["state"] == "delivered"


async def test_expired_archive_delivers_expired_after_completed(
    api: httpx.AsyncClient, receiver: Receiver, webhook_env: dict[str, str]
) -> None:
    job = await _start(api, [5], receiver.url("/expiry"))
    await deliveries(api, job["job_id"])
    services = await Services.open(load_settings(webhook_env))
    try:
        # Due now rather than in ARCHIVE_TTL_SECONDS; then the sweeper's own pass.
        await services.redis.zadd(services.store.expiry_key, {job["job_id"]: 0})
        assert await sweep_expired_archives(services) >= 1
    finally:
        await services.close()
    completed, expired = await deliveries(api, job["job_id"], count=2)
    assert (completed["event"], expired["event"]) == ("completed", "expired")
    hooks = receiver.on("/expiry")
    assert [h.payload["type"] for h in hooks] == ["job.completed", "job.expired"]
    assert hooks[1].headers["webhook-id"] == f"msg_{job['job_id']}_expired"
    assert hooks[1].payload["data"]["status"] == "expired"


async def test_receiver_down_then_up_gets_the_same_message_retried(
    api: httpx.AsyncClient,
) -> None:
    late = Receiver()  # its port is free: nothing listens there yet
    job = await _start(api, [5], late.url("/late"))
    first = await eventually(
        lambda: _status(api, job["job_id"]),
        lambda s: bool(s["webhook_deliveries"]) and s["webhook_deliveries"][0]["attempts"] >= 1,
    )
    failed_attempt = first["webhook_deliveries"][0]
    assert failed_attempt["state"] == "pending"
    assert failed_attempt["last_status_code"] is None
    assert "could not connect" in failed_attempt["last_error"]
    assert failed_attempt["next_attempt_at"] > failed_attempt["last_attempt_at"]
    await late.start()
    try:
        [delivery] = await deliveries(api, job["job_id"])
    finally:
        await late.stop()
    assert delivery["state"] == "delivered" and delivery["attempts"] >= 2
    hook = only(late.on("/late"))
    assert hook.headers["webhook-id"] == failed_attempt["webhook_id"]


async def _delivery_counts(env: dict[str, str]) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{env['METRICS_PORT']}/metrics")).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "longhaul_webhook_deliveries":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["outcome"]] = sample.value
    return counts


async def test_delivery_outcomes_are_counted_in_the_workers_metrics(
    api: httpx.AsyncClient, receiver: Receiver, webhook_env: dict[str, str]
) -> None:
    before = await _delivery_counts(webhook_env)
    receiver.answers["/counted-gone"] = 410
    gone = await _start(api, [5], receiver.url("/counted-gone"))
    ok = await _start(api, [5], receiver.url("/counted-ok"))
    await deliveries(api, gone["job_id"])
    await deliveries(api, ok["job_id"])
    # Counted just after the outcome is recorded: the status can show it a moment earlier.
    after = await eventually(
        lambda: _delivery_counts(webhook_env),
        lambda now: (
            now["delivered"] > before["delivered"] and now["abandoned"] > before["abandoned"]
        ),
    )
    assert after["abandoned"] - before["abandoned"] == 1
    assert after["delivered"] - before["delivered"] == 1
    assert after["retrying"] == before["retrying"]


async def test_410_gone_stops_the_retries(api: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.answers["/gone"] = 410
    job = await _start(api, [5], receiver.url("/gone"))
    [delivery] = await deliveries(api, job["job_id"])
    assert (delivery["state"], delivery["attempts"], delivery["last_status_code"]) == (
        "failed",
        1,
        410,
    )
    assert delivery["next_attempt_at"] is None
    # Past the first retry's time: nothing more was sent.
    await asyncio.sleep(2)
    assert len(receiver.on("/gone")) == 1


async def test_errors_are_retried_with_backoff_then_given_up(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.answers["/broken"] = 500
    job = await _start(api, [5], receiver.url("/broken"))
    [delivery] = await deliveries(api, job["job_id"])
    hooks = receiver.on("/broken")
    # Attempts at 0 s, 1 s and 3 s; the next (7 s) falls past WEBHOOK_RETRY_FOR_SECONDS.
    assert delivery["state"] == "failed" and delivery["attempts"] == len(hooks) == 3
    assert delivery["last_status_code"] == 500
    assert delivery["last_error"].startswith("gave up after 3 attempts")
    assert len({h.headers["webhook-id"] for h in hooks}) == 1
    stamps = [int(h.headers["webhook-timestamp"]) for h in hooks]
    assert stamps[2] - stamps[0] >= 2


@pytest.mark.parametrize(
    ("callback_url", "says"),
    [
        ("not a url", "spaces"),
        ("hooks.example.com/x", "http:// or https://"),
        ("ftp://127.0.0.1/x", "got ftp:"),
        ("http://user:pw@127.0.0.1/x", "credentials"),
        ("http://127.0.0.2:9/x", "loopback"),  # only 127.0.0.1 is on this stack's list
        ("http://[::1]:9/x", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/x", "private"),
        ("http://" + "a" * 2048 + ".example/", "length <= 2048"),
        (42, "Expected `str | null`"),
    ],
)
async def test_bad_callback_urls_are_refused_naming_the_field(
    api: httpx.AsyncClient, callback_url: Any, says: str
) -> None:
    response = await api.post(
        "/v1/download/async", json={"file_ids": [5], "callback_url": callback_url}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["detail"].startswith("callback_url: ") and says in body["detail"], body
    assert body["extra"][0]["key"] == "callback_url"


async def test_callback_is_refused_when_the_server_has_no_secret(
    app_client: httpx.AsyncClient,
) -> None:
    # The session's shared stack sets no WEBHOOK_SECRET.
    response = await app_client.post(
        "/v1/download/async", json={"file_ids": [5], "callback_url": "https://hooks.example/x"}
    )
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "callback_url: webhooks are off on this server (WEBHOOK_SECRET is not set)"
    )


async def test_a_job_without_callback_has_no_deliveries(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/download/async", json={"file_ids": [5]})
    done = await wait_for_status(api, response.json()["job_id"], {"ready"})
    assert done["callback_url"] is None and done["webhook_deliveries"] == []


async def test_openapi_documents_the_webhook_and_real_deliveries_fit_it(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    schema = (await api.get("/docs/openapi.json")).json()
    hook = schema["webhooks"]["jobEnded"]["post"]
    assert {p["name"] for p in hook["parameters"]} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    body = hook["requestBody"]["content"]["application/json"]
    for example in body["examples"].values():
        jsonschema.validate(example["value"], body["schema"])
    start_400 = schema["paths"]["/v1/download/async"]["post"]["responses"]["400"]
    keys = {
        example["value"]["extra"][0]["key"]
        for example in start_400["content"]["application/json"]["examples"].values()
    }
    assert "callback_url" in keys

    failed = await _start(api, [999], receiver.url("/documented"))
    ready = await _start(api, [5], receiver.url("/documented"))
    await deliveries(api, failed["job_id"])
    await deliveries(api, ready["job_id"])
    received = receiver.on("/documented")
    assert {r.payload["type"] for r in received} == {"job.failed", "job.completed"}
    for message in received:
        jsonschema.validate(message.payload, body["schema"])


README = Path(__file__).resolve().parent.parent / "README.md"
README_BASE = "http://127.0.0.1:8000"
README_RECEIVER_PORT = "8099"


def readme_webhook_examples() -> list[tuple[str, str]]:
    """(language, code) of each block of the README's "### Webhooks" section."""
    text = README.read_text()
    start_at = text.index("### Webhooks")
    section = text[start_at : text.index("\n### ", start_at + 1)]
    return re.findall(r"```(sh|python)\n(.*?)```", section, re.S)


async def test_readme_webhook_receiver_and_curl_run_as_written(
    webhook_stack: devstack.Process, webhook_env: dict[str, str], tmp_path: Path
) -> None:
    (_, receiver_code), (_, curl_code) = readme_webhook_examples()
    assert "Webhook(SECRET).verify" in receiver_code and "callback_url" in curl_code
    storage = Storage(load_settings(webhook_env))
    await storage.open()
    try:
        await seed_demo(storage, tuple(f for f in DEMO_FILES if f.file_id in {10009, 10012}))
    finally:
        await storage.close()
    port = str(devstack.free_port())
    receiver_process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        receiver_code.replace(README_RECEIVER_PORT, port),
        env={**os.environ, "WEBHOOK_SECRET": SECRET},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await eventually(lambda: _listening(int(port)), bool, timeout=20)
        script = curl_code.replace(README_BASE, webhook_stack.url).replace(
            README_RECEIVER_PORT, port
        )
        curl = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(curl.communicate(), 90)
        assert curl.returncode == 0, err.decode()
        assert out.decode().strip().splitlines()[-1] == "webhook delivered", (
            out.decode(),
            (await _receiver_output(receiver_process)),
        )
        received, err = await asyncio.wait_for(receiver_process.communicate(), 30)
    finally:
        if receiver_process.returncode is None:
            receiver_process.kill()
            await receiver_process.wait()
    assert receiver_process.returncode == 0, err.decode()
    webhook_id, kind, link = received.decode().split()
    assert webhook_id.startswith("msg_") and webhook_id.endswith("_completed")
    assert kind == "job.completed"
    assert link.startswith(("http://", "https://")) and "/archives/" in link


async def _listening(port: int) -> bool:
    # Probed by binding, not connecting: the example serves one request, a probe would be it.
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


async def _receiver_output(process: asyncio.subprocess.Process) -> str:
    if process.returncode is None:
        process.kill()
    out, err = await process.communicate()
    return (out + err).decode()


async def test_delivery_checks_the_address_again_and_sends_nothing_to_a_refused_one(
    services: Services, receiver: Receiver
) -> None:
    # The API accepted this URL under an allow-list; the worker's own settings have none now
    # (as if the name had since moved to a loopback address): nothing is sent, for good.
    worker_services = dataclasses.replace(
        services, settings=services.settings.replace(webhook_secret=SECRET)
    )
    delivery = WebhookDelivery(
        webhook_id="msg_x_failed",
        job_id="x",
        event="failed",
        url=receiver.url("/rebound"),
        data='{"error": "e", "attempt": 1}',
        created_at=time.time(),
    )
    async with client_for(worker_services) as client:
        outcome = await send(worker_services, client, delivery)
    assert outcome.final and outcome.status_code is None
    assert outcome.error is not None and "loopback" in outcome.error
    assert receiver.received == [] and receiver.refused == []


async def test_same_idempotency_key_with_another_callback_is_a_conflict(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    headers = {"Idempotency-Key": f"wh-{time.monotonic_ns()}"}
    body = {"file_ids": [5], "callback_url": receiver.url("/a")}
    first = await api.post("/v1/download/async", json=body, headers=headers)
    again = await api.post("/v1/download/async", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["job_id"] == again.json()["job_id"]
    other = {"file_ids": [5], "callback_url": receiver.url("/b")}
    conflict = await api.post("/v1/download/async", json=other, headers=headers)
    assert conflict.status_code == 422, conflict.text


async def test_the_outbox_entry_is_written_with_the_terminal_event_and_only_then(
    services: Services,
) -> None:
    store, outbox = services.store, Outbox(services.redis, services.settings.key_prefix)
    record = JobRecord(
        job_id=uuid.uuid4().hex, owner="public", file_ids=[5], callback_url="https://h.example/x"
    )
    await store.create(record)
    record.status = JobState.PROCESSING
    assert await store.save_progress(record)
    assert await outbox.of_job(record.job_id) == []
    record.status, record.error = JobState.FAILED, "boom"
    assert await store.save(record, failed_event(record))
    [delivery] = await outbox.of_job(record.job_id)
    assert (delivery.event, delivery.url, delivery.state) == (
        "failed",
        "https://h.example/x",
        "pending",
    )
    assert msgspec.json.decode(delivery.data) == {"error": "boom", "attempt": 0}
    due = await outbox.claim(time.time() + 1, hold_seconds=60, limit=100)
    assert (record.job_id, "failed") in due
    # A late cancel of the ended job is refused by the script, and so adds no delivery.
    record.status = JobState.CANCELLED
    assert await store.save(record, ended_event(record)) is None
    assert [d.event for d in await outbox.of_job(record.job_id)] == ["failed"]


def sending_services(services: Services, **settings: Any) -> Services:
    """`services` as a webhook-sending worker sees them: the secret, this test's receivers on
    loopback allowed, and `settings`."""
    return dataclasses.replace(
        services,
        settings=services.settings.replace(
            webhook_secret=SECRET, webhook_allowed_hosts="127.0.0.1", **settings
        ),
    )


def failed_delivery(url: str) -> WebhookDelivery:
    return WebhookDelivery(
        webhook_id="msg_x_failed",
        job_id="x",
        event="failed",
        url=url,
        data='{"error": "e", "attempt": 1}',
        created_at=time.time(),
    )


async def ended_job(services: Services, callback_url: str) -> str:
    """A job that has just failed with `callback_url`: its delivery is in the outbox, due now."""
    record = JobRecord(
        job_id=uuid.uuid4().hex, owner="public", file_ids=[999], callback_url=callback_url
    )
    await services.store.create(record)
    record.status, record.error = JobState.FAILED, "boom"
    assert await services.store.save(record, failed_event(record))
    return record.job_id


async def test_an_attempt_ends_at_its_time_limit_however_slowly_the_receiver_answers(
    services: Services, slow_receiver: SlowReceiver
) -> None:
    worker_services = sending_services(services, webhook_timeout_seconds=1.0)
    async with client_for(worker_services) as client:
        # The receiver never finishes: without a limit on the whole exchange this never returns.
        outcome = await asyncio.wait_for(
            send(worker_services, client, failed_delivery(slow_receiver.url("/drip"))), 20
        )
    assert outcome.status_code == 500 and not outcome.final
    assert outcome.error is not None
    assert outcome.error.startswith("HTTP 500: x")
    assert outcome.error.endswith("(the answer was cut off after 1 s)")

    # The sender hung up: the receiver's write failed and its request ended.
    async def answering() -> int:
        return slow_receiver.in_flight

    await eventually(answering, lambda n: n == 0)


async def test_a_huge_error_body_is_not_read_into_memory(
    services: Services, slow_receiver: SlowReceiver
) -> None:
    worker_services = sending_services(services)
    tracemalloc.start()
    try:
        async with client_for(worker_services) as client:
            outcome = await send(
                worker_services, client, failed_delivery(slow_receiver.url("/huge"))
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.status_code == 500
    assert outcome.error == "HTTP 500: " + "y" * 200
    # The receiver's own 1 MiB chunk and socket buffers count here too; 64 MiB read whole
    # (several copies as httpx joins and decodes it) would be far past this.
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a 64 MiB error body"


async def test_a_receiver_that_never_finishes_answering_holds_back_no_other_delivery(
    services: Services, receiver: Receiver, slow_receiver: SlowReceiver
) -> None:
    worker_services = sending_services(services, webhook_timeout_seconds=5.0)
    outbox = Outbox(services.redis, services.settings.key_prefix)
    slow_job = await ended_job(services, slow_receiver.url("/drip"))
    sender = asyncio.create_task(run_sender(worker_services))
    try:
        await asyncio.wait_for(slow_receiver.dripping.wait(), 10)
        job = await ended_job(services, receiver.url("/meanwhile"))
        [delivered] = await eventually(
            lambda: outbox.of_job(job), lambda ds: ds[0].state is DeliveryState.DELIVERED
        )
        # Delivered while the slow receiver's first attempt was still going: not yet recorded.
        [slow] = await outbox.of_job(slow_job)
        assert slow.attempts == 0 and slow_receiver.in_flight == 1
        assert delivered.attempts == 1 and len(receiver.on("/meanwhile")) == 1
        # Then the slow attempt ends at its limit, recorded with the status it got.
        [slow] = await eventually(lambda: outbox.of_job(slow_job), lambda ds: ds[0].attempts > 0)
    finally:
        await stop_sender(sender)
    assert (slow.state, slow.last_status_code) == (DeliveryState.PENDING, 500)
    assert slow.last_error is not None and slow.last_error.endswith("cut off after 5 s)")


async def test_two_senders_never_send_one_delivery_at_once(
    services: Services, slow_receiver: SlowReceiver
) -> None:
    # Attempts at 0 s, 2 s and 5 s (give or take the senders' polling), each cut off after
    # 1 s; the next (at 10 s) falls past 8 s.
    worker_services = sending_services(
        services, webhook_timeout_seconds=1.0, webhook_retry_for_seconds=8
    )
    outbox = Outbox(services.redis, services.settings.key_prefix)
    job = await ended_job(services, slow_receiver.url("/drip"))
    senders = [asyncio.create_task(run_sender(worker_services)) for _ in range(2)]
    try:
        [delivery] = await eventually(
            lambda: outbox.of_job(job),
            lambda ds: ds[0].state is not DeliveryState.PENDING,
            timeout=30,
        )
    finally:
        for sender in senders:
            await stop_sender(sender)
    # Each attempt held its claim until it was recorded: one request at a time, each recorded.
    assert slow_receiver.most_in_flight == 1
    assert delivery.state is DeliveryState.FAILED
    assert delivery.attempts == slow_receiver.requests == 3
    assert delivery.last_error is not None and delivery.last_error.startswith("gave up after 3")
    assert await services.redis.zscore(outbox_key(outbox.prefix), member(job, "failed")) is None


async def test_a_receiver_that_never_finishes_answering_does_not_stop_the_workers_webhooks(
    api: httpx.AsyncClient, receiver: Receiver, slow_receiver: SlowReceiver
) -> None:
    slow = await _start(api, [5], slow_receiver.url("/drip"))
    await asyncio.wait_for(slow_receiver.dripping.wait(), 30)
    job = await _start(api, [5], receiver.url("/innocent"))
    [delivery] = await deliveries(api, job["job_id"])
    assert delivery["state"] == "delivered" and len(receiver.on("/innocent")) == 1
    # The slow receiver's attempts (0 s and 3 s, each cut off after 2 s) ended, then it was
    # given up: the next (at 7 s) falls past WEBHOOK_RETRY_FOR_SECONDS.
    [given_up] = await deliveries(api, slow["job_id"])
    assert (given_up["state"], given_up["attempts"], given_up["last_status_code"]) == (
        "failed",
        2,
        500,
    )
    assert given_up["last_error"].endswith("(the answer was cut off after 2 s)")
    assert slow_receiver.requests == 2
