"""What a job card says about time: dates of older jobs, link and archive lifetimes, confirm."""

from __future__ import annotations

from datetime import UTC, datetime

from backend.models import JobRecord, JobState
from backend.pages.views import CONFIRM_CANCEL_AFTER_SECONDS, human_period, job_view, moment_texts

NOW = datetime(2026, 11, 29, 13, 30, tzinfo=UTC).timestamp()


def _record(**fields: object) -> JobRecord:
    return JobRecord(job_id="c" * 32, owner="o", file_ids=[1], **fields)  # type: ignore[arg-type]


def test_times_of_today_are_clock_times_and_older_ones_have_their_date() -> None:
    today = datetime(2026, 11, 29, 9, 5, tzinfo=UTC).timestamp()
    yesterday = datetime(2026, 11, 28, 23, 59, tzinfo=UTC).timestamp()
    assert moment_texts(today, NOW) == ("2026-11-29T09:05:00Z", "09:05 UTC")
    assert moment_texts(yesterday, NOW) == ("2026-11-28T23:59:00Z", "28 Nov 2026, 23:59 UTC")
    assert job_view(_record(created_at=yesterday), NOW).created_text == "28 Nov 2026, 23:59 UTC"


def test_lengths_of_time_in_words() -> None:
    assert human_period(3600) == "1 h"
    assert human_period(5400) == "1.5 h"
    assert human_period(900) == "15 min"
    assert human_period(7 * 86400) == "7 days"
    assert human_period(30) == "30 s"


def test_a_ready_card_says_how_long_the_link_lasts_and_until_when_the_archive_is_kept() -> None:
    kept = datetime(2026, 11, 30, 13, 30, tzinfo=UTC).timestamp()
    view = job_view(_record(status=JobState.READY, archive_expires_at=kept), NOW, link_ttl=3600)
    assert view.link_text == "Link valid 1 h from each click"
    assert view.kept_until_iso == "2026-11-30T13:30:00Z"
    assert view.kept_until_text == "30 Nov 2026, 13:30 UTC"
    running = job_view(_record(status=JobState.PROCESSING), NOW, link_ttl=3600)
    assert running.link_text == running.kept_until_text == ""


def test_cancel_asks_first_only_once_a_job_has_run_a_while() -> None:
    just_started = _record(status=JobState.PROCESSING, started_at=NOW - 1)
    assert not job_view(just_started, NOW).confirm_cancel
    long_running = _record(
        status=JobState.PROCESSING, started_at=NOW - CONFIRM_CANCEL_AFTER_SECONDS - 1
    )
    assert job_view(long_running, NOW).confirm_cancel
    queued = _record(status=JobState.QUEUED)
    assert not job_view(queued, NOW).confirm_cancel
