"""One typed event vocabulary: every name has its Struct, terminal events come from terminal
states, each builder writes the JSON the OpenAPI schema documents (byte for byte what the
hand-built payloads were), and the client decodes every real event into its Struct."""

from __future__ import annotations

import json
from typing import Any

import httpx
import msgspec
import pytest

from backend.app import create_app
from backend.client.follow import JobProgress
from backend.jobevents import (
    JOB_EVENTS,
    STALLED_REASON,
    TERMINAL_EVENTS,
    JobEventData,
    JobEventName,
    completed_event,
    decode_event,
    ended_event,
    failed_event,
    is_terminal_event,
    progress_event,
    retrying_event,
    stalled_event,
    terminal_event,
    terminal_event_for,
)
from backend.models import TERMINAL_STATES, JobRecord, JobState, SkippedFile, SkipReason
from backend.services import Services
from backend.settings import load_settings
from tests.helpers import collect_events, start
from tests.test_openapi import event_data_schema, validate


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The OpenAPI document the API serves, built in-process: no server needed to read it."""
    document: dict[str, Any] = create_app(load_settings({})).openapi_schema.to_schema()
    return document


def running_record(**changes: Any) -> JobRecord:
    record = JobRecord(
        job_id="a" * 32,
        owner="o",
        file_ids=[1, 2, 3],
        status=JobState.PROCESSING,
        progress=42,
        total_files=2,
        processed_files=1,
        bytes_total=900,
        bytes_processed=380,
        attempt=2,
        max_attempts=4,
        skipped_file_ids=[3],
        skipped=[SkippedFile(file_id=3, name="invoices-q3.zip", reason=SkipReason.NOT_FOUND)],
        last_error="S3 unavailable: connection refused",
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


# What the worker, the lease watch, the cancel path and the sweeper wrote as hand-built dicts
# before the vocabulary, in their key order: the builders must encode to exactly these bytes.
FIGURES = {
    "status": "processing",
    "progress": 42,
    "processed_files": 1,
    "total_files": 2,
    "bytes_processed": 380,
    "bytes_total": 900,
    "attempt": 2,
    "max_attempts": 4,
}


def built_events() -> list[tuple[JobEventData, dict[str, Any]]]:
    """(event, its wire JSON) for every builder, from records as the code paths leave them."""
    ready = running_record(status=JobState.READY, progress=100, archive_size=9437512)
    failed = running_record(status=JobState.FAILED, error="S3 unavailable: connection refused")
    return [
        (progress_event(running_record()), FIGURES),
        (
            retrying_event(running_record(), retry_in=2.0),
            FIGURES | {"error": "S3 unavailable: connection refused", "retry_in": 2.0},
        ),
        (stalled_event(running_record()), FIGURES | {"reason": "waiting for a worker"}),
        # Stored without a URL: each delivery of the stream mints a fresh one.
        (
            completed_event(ready),
            {
                "download_url": None,
                "archive_size": 9437512,
                "total_files": 2,
                "skipped_file_ids": [3],
                "skipped": [{"file_id": 3, "name": "invoices-q3.zip", "reason": "not_found"}],
            },
        ),
        (failed_event(failed), {"error": "S3 unavailable: connection refused", "attempt": 2}),
        (ended_event(running_record(status=JobState.CANCELLED)), {"status": "cancelled"}),
        (ended_event(running_record(status=JobState.EXPIRED)), {"status": "expired"}),
    ]


def test_every_event_name_has_its_struct_and_nothing_else_does() -> None:
    assert set(JOB_EVENTS) == set(JobEventName)
    built = {event.name: type(event) for event, _ in built_events()}
    assert set(built) == set(JobEventName)
    for name, kind in built.items():
        assert JOB_EVENTS[name] is kind, name


def test_terminal_events_are_the_events_of_the_terminal_states() -> None:
    assert {terminal_event_for(state) for state in TERMINAL_STATES} == TERMINAL_EVENTS
    assert {"completed", "failed", "cancelled", "expired"} == TERMINAL_EVENTS
    for state in JobState:
        if state.is_terminal:
            record = running_record(status=state)
            assert terminal_event(record).name == terminal_event_for(state)
            assert is_terminal_event(terminal_event_for(state))
        else:
            with pytest.raises(KeyError):
                terminal_event_for(state)
    assert not is_terminal_event("progress") and not is_terminal_event("no-such-event")


@pytest.mark.parametrize("index", range(len(built_events())))
def test_each_builder_writes_the_json_the_schema_documents(
    schema: dict[str, Any], index: int
) -> None:
    event, wire = built_events()[index]
    encoded = msgspec.json.encode(event)
    assert encoded == msgspec.json.encode(wire)  # same keys, same order, same values
    documented = event_data_schema(schema, event.name)
    validate(json.loads(encoded), documented, schema)
    assert set(documented["required"]) <= set(wire) <= set(documented["properties"])


def test_the_stalled_reason_is_what_pages_and_clients_have_always_read() -> None:
    assert STALLED_REASON == "waiting for a worker"


def test_retrying_and_waiting_are_defined_once_on_the_record() -> None:
    assert running_record(retry_at=10.0).waiting_to_retry
    assert running_record(retry_at=10.0, attempt=1).retrying
    assert running_record(attempt=2).retrying and not running_record(attempt=2).waiting_to_retry
    assert not running_record(attempt=1).retrying
    assert not running_record(status=JobState.FAILED, retry_at=10.0).waiting_to_retry
    assert running_record(stalled_at=5.0).waiting_for_worker
    assert not running_record(status=JobState.CANCELLED, stalled_at=5.0).waiting_for_worker


def test_unknown_event_names_are_skipped_and_malformed_data_is_refused() -> None:
    assert decode_event("thawed", b'{"anything": 1}') is None
    with pytest.raises(msgspec.ValidationError):
        decode_event("failed", b'{"error": "x"}')
    with pytest.raises(msgspec.DecodeError):
        decode_event("progress", b'{"status": "proc')
    # Fields a newer server adds are ignored, so old clients keep working.
    decoded = decode_event("failed", b'{"error": "x", "attempt": 4, "hint": "retry later"}')
    assert decoded == failed_event(running_record(status=JobState.FAILED, error="x", attempt=4))


def decoded_as_the_client_does(event: str, data: dict[str, Any]) -> JobEventData:
    found = decode_event(event, json.dumps(data))
    assert found is not None, event
    assert type(found) is JOB_EVENTS[JobEventName(event)]
    assert found.name == event
    # Nothing lost or reshaped between the wire and the Struct.
    assert json.loads(msgspec.json.encode(found)) == data
    return found


async def test_the_client_decodes_every_event_of_real_jobs_into_its_struct(
    http: httpx.AsyncClient,
) -> None:
    for file_ids, final in (([1, 5], "ready"), ([999_999], "failed")):
        created = await start(http, file_ids)
        events = await collect_events(http, created["job_id"])
        view = JobProgress(created["job_id"])
        for event in events:
            view.apply_event(decoded_as_the_client_does(event.event, event.data), event.id)
        assert events[-1].event in TERMINAL_EVENTS
        assert view.status == final


async def test_the_client_decodes_events_the_store_wrote_for_every_name(
    services: Services,
) -> None:
    store = services.store
    retried = JobRecord(job_id="b" * 32, owner="o", file_ids=[1], total_files=1)
    await store.create(retried)
    retried.status, retried.attempt, retried.max_attempts = JobState.PROCESSING, 1, 4
    retried.last_error, retried.retry_at = "S3 unavailable", 1.0
    await store.save(retried, retrying_event(retried, retry_in=1.0))
    retried.attempt, retried.retry_at, retried.stalled_at = 2, None, 2.0
    await store.save(retried, stalled_event(retried))
    retried.status = JobState.CANCELLED
    await store.save(retried, ended_event(retried))

    expired = JobRecord(job_id="c" * 32, owner="o", file_ids=[1], total_files=1)
    await store.create(expired)
    expired.status, expired.archive_size = JobState.READY, 123
    await store.save(expired, completed_event(expired))
    await store.expire(expired)

    names = []
    for job_id in (retried.job_id, expired.job_id):
        for event in await store.events_after(job_id):
            decoded_as_the_client_does(event.event, json.loads(event.data))
            names.append(event.event)
    assert set(names) == set(JobEventName) - {JobEventName.FAILED}
