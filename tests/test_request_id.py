"""X-Request-ID: echoed when sent, a UUID otherwise, and named by the JSON log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from backend import devstack
from backend.logs import REQUEST_ID, JsonFormatter, bind_job
from backend.requestid import request_id_from


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def test_a_sent_request_id_is_echoed(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/files", headers={"X-Request-ID": "order-42.retry:1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "order-42.retry:1"


async def test_without_one_each_request_gets_a_new_uuid(http: httpx.AsyncClient) -> None:
    first, second = await http.get("/v1/files"), await http.get("/v1/files")
    assert is_uuid(first.headers["x-request-id"])
    assert is_uuid(second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize("sent", ["two words", "x" * 129, 'quote"d', "semi;colon"])
async def test_an_unusable_request_id_is_replaced(http: httpx.AsyncClient, sent: str) -> None:
    response = await http.get("/v1/files", headers={"X-Request-ID": sent})
    assert is_uuid(response.headers["x-request-id"])


async def test_refusals_carry_the_request_id_too(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/download/async", json={"file_ids": [0]}, headers={"X-Request-ID": "bad-body-1"}
    )
    assert response.status_code == 400
    assert response.headers["x-request-id"] == "bad-body-1"


async def access_line(process: devstack.Process, request_id: str) -> dict[str, Any]:
    """The process's JSON access log line for `request_id`, once written."""
    assert process.log_path is not None

    async def written() -> dict[str, Any]:
        while True:
            for line in process.log_path.read_text(errors="replace").splitlines():  # type: ignore[union-attr]
                if request_id in line and line.startswith("{"):
                    entry: dict[str, Any] = json.loads(line)
                    if entry.get("logger") == "longhaul.access":
                        return entry
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(written(), 10)


async def test_the_access_log_line_is_json_with_request_id_client_and_status(
    http: httpx.AsyncClient, api_server: devstack.Process
) -> None:
    request_id = f"log-{uuid.uuid4().hex}"
    await http.get("/v1/download/status/" + "f" * 32, headers={"X-Request-ID": request_id})

    entry = await access_line(api_server, request_id)
    assert entry["request_id"] == request_id
    assert entry["status"] == 404
    assert entry["method"] == "GET"
    assert entry["path"] == "/v1/download/status/" + "f" * 32
    assert entry["client"] == "127.0.0.1"
    assert entry["level"] == "info"
    assert isinstance(entry["duration_ms"], float)


def test_log_lines_name_the_request_job_and_trace_they_belong_to() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("backend.worker", logging.INFO, __file__, 1, "hello", (), None)
    assert set(json.loads(formatter.format(record))) == {"ts", "level", "logger", "message"}

    tracer = TracerProvider().get_tracer("test")
    token = REQUEST_ID.set("req-1")
    try:
        with bind_job("job-1"), tracer.start_as_current_span("work") as span:
            entry = json.loads(formatter.format(record))
    finally:
        REQUEST_ID.reset(token)
    assert entry["request_id"] == "req-1"
    assert entry["job_id"] == "job-1"
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "job_id" not in json.loads(formatter.format(record))


def test_usable_ids_are_kept_and_others_replaced() -> None:
    assert request_id_from("0f8e2a1c9b7d4e3f8a6b5c4d3e2f1a0b") == "0f8e2a1c9b7d4e3f8a6b5c4d3e2f1a0b"
    assert is_uuid(request_id_from(None))
    assert is_uuid(request_id_from(""))
    assert is_uuid(request_id_from("line\nbreak"))
