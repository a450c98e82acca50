"""The job runner is generic over kinds: a kind that is not an archive gets the same attempts,
backoff, progress cadence, failure and cancellation, through a real arq worker and Redis."""

from __future__ import annotations

import json
import uuid

from backend import queue
from backend.models import JobRecord, JobState
from backend.runner import Attempt, JobCancelled, JobFailed, job_function, percent
from backend.services import Services
from backend.settings import Settings
from backend.storage import StorageError
from tests.helpers import run_worker_until_idle


class CountingKind:
    """Counts to `steps`, failing transiently on its first `flaky` attempts."""

    name = "count_to_ten"

    def __init__(self, flaky: int = 0, verdict: str = "", hiccup: str = "") -> None:
        self.flaky = flaky
        self.verdict = verdict
        self.hiccup = hiccup or "object storage hiccup on attempt {number}"
        self.attempts: list[int] = []

    async def run(self, attempt: Attempt) -> None:
        self.attempts.append(attempt.number)
        if self.verdict:
            raise JobFailed(self.verdict)
        attempt.record.total_files = 10
        for step in range(1, 11):
            if step == 5 and attempt.number <= self.flaky:
                raise StorageError(self.hiccup.format(number=attempt.number))
            await attempt.report(step, 0)
        if not await attempt.complete():
            raise JobCancelled


async def run_kind(services: Services, settings: Settings, kind: CountingKind) -> JobRecord:
    record = JobRecord(job_id=uuid.uuid4().hex, owner="public", file_ids=[1])
    await services.store.create(record)
    assert await queue.enqueue(services.redis, settings, record.job_id, kind=kind.name)
    await run_worker_until_idle(settings, functions=[job_function(kind, settings)])
    done = await services.store.get(record.job_id)
    assert done is not None
    return done


async def test_a_kind_that_is_not_an_archive_runs_to_ready_with_progress(
    services: Services, settings: Settings
) -> None:
    kind = CountingKind()
    done = await run_kind(services, settings, kind)
    assert done.status is JobState.READY
    assert (done.progress, done.processed_files) == (100, 10)
    events = await services.store.events_after(done.job_id)
    # One progress write per finished step (the cadence), then the end.
    progress = [json.loads(e.data)["processed_files"] for e in events if e.event == "progress"]
    assert progress[-10:] == list(range(1, 11))
    assert events[-1].event == "completed"
    assert kind.attempts == [1]


async def test_transient_errors_of_any_kind_are_retried_with_backoff(
    services: Services, settings: Settings
) -> None:
    kind = CountingKind(flaky=2)
    done = await run_kind(services, settings, kind)
    assert done.status is JobState.READY
    assert kind.attempts == [1, 2, 3]
    retrying = [e for e in await services.store.events_after(done.job_id) if e.event == "retrying"]
    assert [json.loads(e.data)["retry_in"] for e in retrying] == [1.0, 2.0]
    assert "hiccup on attempt 2" in (done.last_error or "")


async def test_progress_shown_never_goes_back_when_an_attempt_starts_over(
    services: Services, settings: Settings
) -> None:
    # Issue 13: "progress drops 27 % -> 0 %, then Ready"; a retry is a note, not a reset.
    kind = CountingKind(flaky=1)
    done = await run_kind(services, settings, kind)
    assert kind.attempts == [1, 2]
    events = await services.store.events_after(done.job_id)
    shown = [json.loads(e.data) for e in events if e.event in ("progress", "retrying")]
    for field in ("progress", "processed_files"):
        values = [event[field] for event in shown]
        assert values == sorted(values), (field, values)
    assert max(event["progress"] for event in shown if event["attempt"] == 1) == 40


async def test_a_storage_servers_dump_reaches_operators_not_the_words(
    services: Services, settings: Settings
) -> None:
    dump = (
        "object storage at s3.example refused to read 'x': S3 operation failed; code: SlowDown, "
        "message: Please reduce your request rate., resource: /c/x, request_id: 17A3F0C2D, "
        "host_id: dd9025bab4ad464b"
    )
    kind = CountingKind(flaky=1, hiccup=dump)
    done = await run_kind(services, settings, kind)
    assert done.status is JobState.READY
    retrying = [e for e in await services.store.events_after(done.job_id) if e.event == "retrying"]
    error = json.loads(retrying[0].data)["error"]
    assert error == (
        "object storage at s3.example refused to read 'x': Please reduce your request rate."
    )
    assert done.last_error == error
    assert done.error_detail == dump  # beside `last_error`, for /ops and the API


async def test_a_kinds_verdict_fails_the_job_at_once_with_its_words(
    services: Services, settings: Settings
) -> None:
    kind = CountingKind(verdict="nothing to count")
    done = await run_kind(services, settings, kind)
    assert done.status is JobState.FAILED
    assert done.error == "nothing to count"
    assert kind.attempts == [1]


def test_progress_keeps_100_for_ready() -> None:
    assert percent(10, 10, 3, 3) == 99
    assert percent(0, 0, 3, 3) == 99
    assert percent(5, 10, 0, 3) == 50
    assert percent(0, 0, 1, 4) == 25
