"""The job store on real Redis: atomic record + event writes, and terminal states that stick."""

from __future__ import annotations

import pytest

from backend.downloads import InvalidInput, check_file_ids, is_job_id
from backend.jobevents import ended_event
from backend.jobs import parse_event_id
from backend.models import JobRecord, JobState
from backend.services import Services


def test_event_ids_parse_only_in_stream_form() -> None:
    assert parse_event_id("1795917627124-0") == (1795917627124, 0)
    assert parse_event_id(" 5-12 ") == (5, 12)
    for bad in ("", "5", "5-", "-5", "a-1", "1-2-3", "1.5-0", "9" * 21 + "-0"):
        assert parse_event_id(bad) is None
    # Redis refuses these as stream ids: digits of other scripts, parts past 2**64 - 1.
    assert parse_event_id("\u0661\u0667\u0669\u0665-0") is None
    assert parse_event_id("\uff11-0") is None
    assert parse_event_id(f"1-{2**64}") is None
    assert parse_event_id(f"{2**64 - 1}-{2**64 - 1}") == (2**64 - 1, 2**64 - 1)


def test_file_id_rules_beyond_types() -> None:
    check_file_ids([1, 2, 3], 3)
    with pytest.raises(InvalidInput, match="at most 3"):
        check_file_ids([1, 2, 3, 4], 3)
    with pytest.raises(InvalidInput, match=r"duplicate ids \[2, 5\]"):
        check_file_ids([5, 2, 1, 2, 5, 5], 10)


def test_job_ids_are_32_lowercase_hex() -> None:
    assert is_job_id("0123456789abcdef0123456789abcdef")
    assert not is_job_id("0123456789ABCDEF0123456789abcdef")
    assert not is_job_id("../etc")


async def test_a_terminal_job_refuses_further_changes(services: Services) -> None:
    store = services.store
    record = JobRecord(job_id="f" * 32, owner="public", file_ids=[1], total_files=1)
    await store.create(record)
    record.status = JobState.CANCELLED
    assert await store.save(record, ended_event(record)) not in (None, "")
    record.status = JobState.PROCESSING
    record.progress = 50
    assert await store.save_progress(record) is None
    stored = await store.get(record.job_id)
    assert stored is not None
    assert stored.status is JobState.CANCELLED
    assert stored.progress == 0
    events = await store.events_after(record.job_id)
    assert [e.event for e in events] == ["progress", "cancelled"]


async def test_creating_the_same_job_twice_keeps_the_first(services: Services) -> None:
    store = services.store
    first = JobRecord(job_id="e" * 32, owner="alice", file_ids=[1])
    await store.create(first)
    again = JobRecord(job_id="e" * 32, owner="mallory", file_ids=[2])
    await store.create(again)
    stored = await store.get(first.job_id)
    assert stored is not None and stored.owner == "alice"
    assert [r.job_id for r in await store.jobs_of("alice")] == [first.job_id]
    assert await store.jobs_of("mallory") == []
