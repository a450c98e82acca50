"""Error reports reach a real Sentry stand-in (tests/sentry_fixtures.py) from real API and
worker processes: one event per failure, tagged, and with no secret in the bytes sent."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from backend import devstack, errorreporting, tracing
from backend.devstack import free_port
from backend.downloads import start_job
from backend.models import JobState
from backend.services import Services
from backend.settings import Settings, SettingsError, load_settings
from tests.helpers import eventually, start, wait_for_status
from tests.sentry_fixtures import (
    SentryReceiver,
    sentry_receiver_fixture,  # noqa: F401 (provides the `sentry_receiver` fixture)
)
from tests.test_validation import CASES as BAD_REQUESTS

# What the processes hold or are sent that must never reach Sentry.
S3_SECRET = "s3-secret-Zq81vLx0Tn"
JWT_SECRET = "jwt-secret-of-at-least-32-bytes-Kp3Rw"
SECRET_KEY = "cookie-signing-key-Wm5Yd"
TOKEN = jwt.encode({"sub": "alice"}, JWT_SECRET, algorithm="HS256")
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# A presigned URL's signature and credential, as a client might paste them into a request.
SIGNATURE = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
CREDENTIAL = "AKIAIOSFODNN7EXAMPLE%2F20261129%2Fus-east-1%2Fs3%2Faws4_request"
COOKIE_VALUE = "csrf-cookie-value-Hh7Qe"


def reporting_env(env: dict[str, str], receiver: SentryReceiver, **extra: str) -> dict[str, str]:
    return {
        **env,
        "SENTRY_DSN": receiver.dsn,
        "SENTRY_ENVIRONMENT": "ci",
        "S3_SECRET_ACCESS_KEY": S3_SECRET,
        "JWT_SECRET": JWT_SECRET,
        "SECRET_KEY": SECRET_KEY,
        **extra,
    }


def assert_no_secrets(raw: bytes) -> None:
    assert raw, "nothing was sent"
    for secret in (S3_SECRET, JWT_SECRET, SECRET_KEY, TOKEN, SIGNATURE, CREDENTIAL, COOKIE_VALUE):
        assert secret.encode() not in raw, secret
    # A JWT's header, in any token at all.
    assert b"eyJhbGciOi" not in raw
    assert b"AKIAIOSFODNN7EXAMPLE" not in raw


async def received(receiver: SentryReceiver, count: int) -> None:
    """Wait until `count` events have arrived. The test then stops the process, which sends
    whatever it still holds, and checks that nothing more came."""

    async def events() -> int:
        return len(receiver.events())

    await eventually(events, lambda n: n >= count)


def exception_type(event: dict[str, Any]) -> str:
    return str(event["exception"]["values"][-1]["type"])


async def test_each_failed_job_attempt_arrives_once_tagged_with_job_attempt_kind_and_trace(
    sentry_receiver: SentryReceiver,
    isolated_env: dict[str, str],
    services: Services,
    tmp_path: Path,
) -> None:
    env = reporting_env(isolated_env, sentry_receiver, MAX_RETRIES="1", RETRY_BACKOFF_SECONDS="0.2")
    # Traced, so the job carries the trace of the POST that started it.
    api = devstack.start_api({**env, "OTEL_TRACES_EXPORTER": "console"}, tmp_path)
    # Every S3 call of this worker meets a closed port: each attempt fails with a storage error.
    dead_s3 = f"http://127.0.0.1:{free_port()}"
    worker = devstack.start_worker({**env, "S3_ENDPOINT": dead_s3}, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=api.url, headers=BEARER, timeout=30) as client:
            job_id = (await start(client, [1, 2]))["job_id"]
            final = await wait_for_status(client, job_id, {"failed"})
            await received(sentry_receiver, 2)
    finally:
        # SIGTERM: each SDK sends what it still holds before its process exits.
        worker.stop()
        api.stop()

    assert final["attempt"] == 2
    record = await services.store.get(job_id)
    assert record is not None
    trace_id = tracing.trace_id_of(record.trace_context)
    assert trace_id is not None
    assert sentry_receiver.refused == []
    events = sorted(sentry_receiver.events(), key=lambda e: int(e["tags"]["attempt"]))
    assert [(e["tags"]["attempt"], e["tags"]["final_attempt"], e["level"]) for e in events] == [
        ("1", "false", "warning"),
        ("2", "true", "error"),
    ]
    for event in events:
        assert event["tags"]["job_id"] == job_id
        assert event["tags"]["job_kind"] == "build_archive"
        assert event["tags"]["trace_id"] == trace_id
        assert event["tags"]["service"] == "longhaul-worker"
        assert event["environment"] == "ci"
        assert exception_type(event) == "StorageError"
    assert_no_secrets(sentry_receiver.raw())


async def test_a_worker_reports_a_timeout_but_not_a_job_refused_on_its_input_or_a_success(
    sentry_receiver: SentryReceiver,
    isolated_env: dict[str, str],
    services: Services,
    tmp_path: Path,
) -> None:
    # 1 MiB/s: the 6 MiB file takes far longer than the 1 s limit, the 10-byte one does not.
    env = reporting_env(
        isolated_env,
        sentry_receiver,
        JOB_TIMEOUT_SECONDS="1",
        THROTTLE_BYTES_PER_SECOND=str(1024 * 1024),
    )
    worker = devstack.start_worker(env, tmp_path)
    try:
        missing = await start_job(services, [987654], "public")
        small = await start_job(services, [5], "public")
        too_slow = await start_job(services, [8], "public")

        async def states() -> list[JobState]:
            records = [await services.store.get(r.job_id) for r in (missing, small, too_slow)]
            return [r.status for r in records if r is not None]

        ended = await eventually(states, lambda s: len(s) == 3 and all(x.is_terminal for x in s))
        await received(sentry_receiver, 1)
    finally:
        worker.stop()

    assert ended == [JobState.FAILED, JobState.READY, JobState.FAILED]
    (event,) = sentry_receiver.events()
    assert event["tags"]["job_id"] == too_slow.job_id
    assert event["tags"]["attempt"] == "1"
    assert event["tags"]["final_attempt"] == "true"
    assert event["level"] == "error"
    assert exception_type(event) == "TimeoutError"
    assert_no_secrets(sentry_receiver.raw())


# A worker whose one kind has a bug: its attempt raises what nobody expects. The runner both
# reports and logs such an error; it must still arrive once.
BUGGY_WORKER = """
import asyncio

from backend import errorreporting
from backend.downloads import start_job
from backend.queue import BUILD_ARCHIVE
from backend.runner import job_function
from backend.services import Services
from backend.settings import load_settings
from backend.worker import create_worker


class Buggy:
    name = BUILD_ARCHIVE

    async def run(self, attempt):
        raise KeyError("archive_size")


async def main():
    settings = load_settings()
    errorreporting.configure(settings, "longhaul-worker")
    services = await Services.open(settings)
    record = await start_job(services, [5], "public")
    worker = create_worker(
        settings, burst=True, poll_delay=0.05, handle_signals=False, cron_jobs=[],
        functions=[job_function(Buggy(), settings)],
    )
    try:
        await worker.async_run()
    finally:
        await worker.close()
        await services.close()
    print(record.job_id)


asyncio.run(main())
"""


async def test_an_unexpected_error_in_a_job_is_reported_once_though_it_is_also_logged(
    sentry_receiver: SentryReceiver, isolated_env: dict[str, str], services: Services
) -> None:
    env = devstack.service_env(reporting_env(isolated_env, sentry_receiver))
    run = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BUGGY_WORKER,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(run.communicate(), 60)
    assert run.returncode == 0, err.decode()
    job_id = out.decode().strip()

    record = await services.store.get(job_id)
    assert record is not None
    assert record.status is JobState.FAILED
    assert record.error == "internal error: KeyError: 'archive_size'"
    assert b"failed with an unexpected error" in err  # logged, with its traceback
    (event,) = sentry_receiver.events()
    assert event["tags"]["job_id"] == job_id
    assert event["tags"]["attempt"] == "1"
    assert event["tags"]["final_attempt"] == "true"
    assert exception_type(event) == "KeyError"
    assert_no_secrets(sentry_receiver.raw())


def access_line(log: Path, request_id: str) -> dict[str, Any]:
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue  # the console span exporter's multi-line JSON
        with_context = json.loads(line) if '"longhaul.access"' in line else {}
        if with_context.get("request_id") == request_id:
            return with_context
    raise AssertionError(f"no access line for {request_id}")


async def test_an_unexpected_api_error_arrives_once_with_request_and_trace_ids_and_no_secrets(
    sentry_receiver: SentryReceiver,
    isolated_env: dict[str, str],
    services: Services,
    tmp_path: Path,
) -> None:
    # Sentry traces on as well: transactions carry the request too, and must be as clean.
    env = reporting_env(
        isolated_env,
        sentry_receiver,
        OTEL_TRACES_EXPORTER="console",
        SENTRY_TRACES_SAMPLE_RATE="1",
    )
    api = devstack.start_api(env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=api.url, headers=BEARER, timeout=30) as client:
            # Answers given on purpose, each the same with the integration reading bodies
            # first as without it (test_validation.py): none is an error to report.
            for case in BAD_REQUESTS:
                answer = await client.request(
                    case.method, case.path, content=case.body, headers=case.headers
                )
                assert answer.status_code == case.status, (case.name, answer.text)
                assert case.says in answer.json()["detail"], case.name
            bad_token = await client.get(
                f"/v1/download/status/{uuid.uuid4().hex}",
                headers={"Authorization": "Bearer nonsense"},
            )
            assert bad_token.status_code == 401

            # A record this release cannot read (written by an incompatible one, or by hand):
            # the status route has no answer for that but a 500.
            job_id = (await start(client, [1]))["job_id"]
            key = services.store.record_key(job_id)
            stored = json.loads(await services.redis.get(key))
            await services.redis.set(key, json.dumps({**stored, "progress": "half"}))
            broken = await client.get(
                f"/v1/download/status/{job_id}",
                params={
                    "X-Amz-Credential": CREDENTIAL.replace("%2F", "/"),
                    "X-Amz-Signature": SIGNATURE,
                    "access_token": TOKEN,
                },
                headers={
                    "X-Request-ID": "req-sentry-500",
                    "Cookie": f"longhaul_csrf={COOKIE_VALUE}",
                    "Referer": f"http://s3.test/b/k.zip?X-Amz-Signature={SIGNATURE}",
                },
            )
            assert broken.status_code == 500
            assert broken.headers["X-Request-ID"] == "req-sentry-500"
            await received(sentry_receiver, 1)
    finally:
        api.stop()

    assert sentry_receiver.refused == []
    (event,) = sentry_receiver.events()
    assert event["tags"]["request_id"] == "req-sentry-500"
    logged = access_line(api.log_path, "req-sentry-500")
    assert logged["status"] == 500
    assert event["tags"]["trace_id"] == logged["trace_id"]
    assert event["tags"]["service"] == "longhaul-api"
    assert exception_type(event) == "ValidationError"
    assert event["request"]["url"].endswith(f"/v1/download/status/{job_id}")
    assert "X-Amz-Signature=[Filtered]" in event["request"]["query_string"]
    assert sentry_receiver.items("transaction"), "no transaction was sent"
    assert_no_secrets(sentry_receiver.raw())


def test_scrub_removes_tokens_signed_url_parameters_and_configured_secrets() -> None:
    presigned = (
        f"http://s3.test/results/archives/j.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={CREDENTIAL}&X-Amz-Date=20261129T120000Z&X-Amz-Expires=3600"
        f"&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
    )
    sigv4 = (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261129/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={SIGNATURE}"
    )
    event = {
        "request": {
            "headers": {"Authorization": f"Bearer {TOKEN}", "X-Csrftoken": COOKIE_VALUE},
            "query_string": f"X-Amz-Signature={SIGNATURE}&page=2",
        },
        "breadcrumbs": {"values": [{"message": f"GET {presigned} 403"}, {"message": sigv4}]},
        "exception": {"values": [{"value": f"denied for {TOKEN} using {S3_SECRET}"}]},
        "extra": {"settings": f"Settings(s3_secret_access_key='{S3_SECRET}')", "n": 3},
        "tags": {"job_id": "j", "trace_id": "0af7651916cd43dd8448eb211c80319c"},
    }

    scrubbed = errorreporting.scrub(event, (S3_SECRET, JWT_SECRET, "short"))
    raw = json.dumps(scrubbed).encode()

    assert_no_secrets(raw)
    assert scrubbed["tags"] == event["tags"]
    assert scrubbed["extra"]["n"] == 3
    assert scrubbed["request"]["headers"]["Authorization"] == "[Filtered]"
    assert scrubbed["request"]["query_string"] == "X-Amz-Signature=[Filtered]&page=2"
    message = scrubbed["breadcrumbs"]["values"][0]["message"]
    assert message.startswith("GET http://s3.test/results/archives/j.zip?")
    assert "X-Amz-Date=20261129T120000Z" in message
    assert message.endswith("X-Amz-Signature=[Filtered] 403")


def test_reporting_is_off_without_a_dsn_and_bad_settings_name_their_variable() -> None:
    assert errorreporting.configure(Settings(), "longhaul-api") is False
    settings = load_settings({"SENTRY_DSN": "http://key@127.0.0.1:9/1"})
    assert settings.sentry_traces_sample_rate == 0
    with pytest.raises(SettingsError, match="SENTRY_DSN"):
        load_settings({"SENTRY_DSN": "not a dsn"})
    with pytest.raises(SettingsError, match="SENTRY_TRACES_SAMPLE_RATE"):
        load_settings({"SENTRY_TRACES_SAMPLE_RATE": "1.5"})


def _exits_within(process: devstack.Process, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not process.alive():
            return True
        time.sleep(0.1)
    return False


def test_stopping_the_api_with_event_streams_open_reports_nothing(
    sentry_receiver: SentryReceiver,
    isolated_env: dict[str, str],
    services: Services,
    tmp_path: Path,
) -> None:
    """A rollout cuts the event streams still open (browsers reconnect): not an error."""
    worker_env = {**isolated_env, "THROTTLE_BYTES_PER_SECOND": str(256 * 1024)}
    worker = devstack.start_worker(worker_env, tmp_path, name="worker")
    api = devstack.start_api({**isolated_env, "SENTRY_DSN": sentry_receiver.dsn}, tmp_path)
    try:
        job = httpx.post(
            f"{api.url}/v1/download/async", json={"file_ids": [2, 8]}, timeout=10
        ).json()["job_id"]

        def follow() -> None:
            try:
                with httpx.stream(
                    "GET", f"{api.url}/v1/download/subscribe/{job}", timeout=30
                ) as stream:
                    for _ in stream.iter_lines():
                        pass
            except httpx.HTTPError:
                pass

        threading.Thread(target=follow, daemon=True).start()
        time.sleep(2)
        api.signal(signal.SIGTERM)
        assert _exits_within(api, 15)
        time.sleep(1)
        errors = [e for e in sentry_receiver.events() if e.get("level") == "error"]
        assert not errors, [
            (e.get("logentry") or {}).get("message") or e.get("message") for e in errors
        ]
    finally:
        api.stop()
        worker.stop()
