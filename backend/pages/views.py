"""What the pages show about a job and the catalogue: labels, sizes, speed and ETA.

Plain functions over records, no web framework: the templates only print these values.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from backend.catalogue_index import IndexedFile
from backend.failures import describe_skipped, plain_words
from backend.jobtimes import human_duration
from backend.models import JobRecord, JobState

# What a person reads for each state; `data-state` keeps the machine value.
STATE_LABELS: dict[str, str] = {
    JobState.QUEUED: "Queued",
    JobState.PROCESSING: "Preparing",
    JobState.READY: "Ready",
    JobState.FAILED: "Failed",
    JobState.CANCELLED: "Cancelled",
    JobState.EXPIRED: "Expired",
}
# Below this much elapsed time a speed figure is noise.
_MIN_SECONDS_FOR_SPEED = 0.5
# A job running longer than this asks "Cancel download?" first: that much work would be lost.
CONFIRM_CANCEL_AFTER_SECONDS = 5.0
_TITLE_NAMES = 3


def format_size(size: int) -> str:
    """`1.9 MB` style sizes (binary multiples, as file managers show them), for the pages."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class CatalogueRow:
    file_id: int
    name: str
    size: int

    @property
    def size_text(self) -> str:
        return format_size(self.size)


def catalogue_rows(sources: Sequence[IndexedFile]) -> list[CatalogueRow]:
    return [CatalogueRow(s.file_id, s.name, s.size) for s in sources]


@dataclass(frozen=True, slots=True)
class JobTitle:
    """The card's heading: which files, how many, how big."""

    text: str
    detail: str


def job_title(record: JobRecord, names: Mapping[int, CatalogueRow]) -> JobTitle:
    """A heading naming up to three files (ids when the catalogue is not at hand).

    Once the worker knows which files the archive holds, the heading names and counts those
    (issue 13: the title agrees with the ZIP's content), not the files skipped.
    """
    left_out = {file.file_id for file in record.skipped}
    included = [f for f in record.file_ids if f not in left_out]
    labels = [names[f].name if f in names else f"file {f}" for f in included]
    shown = labels[:_TITLE_NAMES]
    if len(labels) > _TITLE_NAMES:
        text = f"{', '.join(shown)} and {len(labels) - _TITLE_NAMES} more"
    elif len(shown) > 1:
        text = f"{', '.join(shown[:-1])} and {shown[-1]}"
    else:
        text = shown[0] if shown else "No files"
    return JobTitle(text=text, detail=title_detail(record, names))


def title_detail(record: JobRecord, names: Mapping[int, CatalogueRow]) -> str:
    """`2 files · 11.0 MB`: of the archive once built, else of the files asked for."""
    size: int | None
    if record.status in (JobState.READY, JobState.EXPIRED) and record.total_files:
        count, size = record.total_files, record.bytes_total
    else:
        left_out = {file.file_id for file in record.skipped}
        included = [f for f in record.file_ids if f not in left_out]
        count = len(included)
        known = all(f in names for f in included)
        size = sum(names[f].size for f in included) if known else None
    parts = [f"{count} file{'s' if count != 1 else ''}"]
    if size is not None:
        parts.append(format_size(size))
    return " · ".join(parts)


@dataclass(frozen=True, slots=True)
class JobCardView:
    """Everything the live part of a job card shows, computed at one instant."""

    job_id: str
    state: str
    state_label: str
    is_active: bool
    progress: int
    files_text: str
    bytes_text: str
    speed_text: str
    eta_text: str
    attempt_text: str
    retry_reason: str
    stalled_text: str
    error_text: str
    skipped_text: str
    title_detail: str
    archive_text: str
    created_iso: str
    created_text: str
    # Ready jobs: how long a link lasts and until when the archive is kept.
    link_text: str = ""
    kept_until_iso: str = ""
    kept_until_text: str = ""
    confirm_cancel: bool = False
    # Ended with files left out: the card's heading is rendered again to name the ZIP's own.
    refresh_head: bool = False
    # Why a queued job waits: its place in the queue (backend/queueplaces.py), or "".
    queue_text: str = ""

    @property
    def value_text(self) -> str:
        """What a screen reader says for the progress bar."""
        return f"{self.progress} percent, {self.files_text}"


def job_view(
    record: JobRecord,
    now: float | None = None,
    queue_text: str = "",
    link_ttl: float | None = None,
) -> JobCardView:
    """The card's live part at `now`; `queue_text` says why a queued job waits; `link_ttl`
    (seconds a presigned link lasts) is for ready jobs' "link valid" note."""
    now = time.time() if now is None else now
    state = record.status
    waiting = record.waiting_to_retry
    retrying = record.retrying
    stalled = record.waiting_for_worker
    label = STATE_LABELS.get(state, str(state).title())
    if stalled:
        label = "Waiting for a worker"
    elif retrying:
        label = "Retrying"
    speed_text = eta_text = ""
    # After a retry the bytes shown hold at the furthest point until the new attempt passes
    # it, so a speed from the first start would mislead.
    if state is JobState.PROCESSING and record.attempt <= 1 and record.started_at and not stalled:
        elapsed = now - record.started_at
        if elapsed >= _MIN_SECONDS_FOR_SPEED and record.bytes_processed > 0:
            speed = record.bytes_processed / elapsed
            speed_text = f"{format_size(int(speed))}/s"
            left = max(record.bytes_total - record.bytes_processed, 0)
            eta_text = f"{human_duration(left / speed)} left" if left else "finishing"
    created = datetime.fromtimestamp(record.created_at or now, tz=UTC)
    kept_iso, kept_text = "", ""
    if state is JobState.READY and record.archive_expires_at:
        kept_iso, kept_text = moment_texts(record.archive_expires_at, now)
    bytes_text = ""
    if record.bytes_total:
        bytes_text = f"{format_size(record.bytes_processed)} of {format_size(record.bytes_total)}"
    return JobCardView(
        job_id=record.job_id,
        state=str(state),
        state_label=label,
        is_active=not state.is_terminal,
        progress=max(0, min(100, record.progress)),
        files_text=f"{record.processed_files} of {record.total_files} files",
        bytes_text=bytes_text,
        speed_text=speed_text,
        eta_text=eta_text,
        attempt_text=_attempt_text(record, retrying=retrying, waiting=waiting),
        retry_reason=plain_words(record.last_error or "") if retrying and not stalled else "",
        stalled_text=(
            "The worker building this archive stopped. Another worker will pick it up "
            "and carry on; nothing is lost."
            if stalled
            else ""
        ),
        error_text=_error_text(record),
        skipped_text=describe_skipped(record.skipped),
        # Sent with a live update once the job ends, so the heading's count follows the ZIP.
        title_detail=title_detail(record, {}) if state.is_terminal else "",
        archive_text=format_size(record.archive_size) if record.archive_size else "",
        created_iso=created.isoformat().replace("+00:00", "Z"),
        created_text=moment_texts(created.timestamp(), now)[1],
        link_text=(
            f"Link valid {human_period(link_ttl)} from each click"
            if state is JobState.READY and link_ttl
            else ""
        ),
        kept_until_iso=kept_iso,
        kept_until_text=kept_text,
        refresh_head=state.is_terminal and bool(record.skipped),
        confirm_cancel=(
            state is JobState.PROCESSING
            and record.started_at is not None
            and now - record.started_at > CONFIRM_CANCEL_AFTER_SECONDS
        ),
        queue_text=queue_text if state is JobState.QUEUED else "",
    )


def moment_texts(timestamp: float, now: float) -> tuple[str, str]:
    """(ISO 8601, words) of a moment: `14:05 UTC` today, `28 Nov 2026, 14:05 UTC` otherwise.

    The page rewrites the words in the reader's time zone (app.js, `time[data-local-time]`).
    """
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    iso = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    if moment.date() == datetime.fromtimestamp(now, tz=UTC).date():
        return iso, moment.strftime("%H:%M UTC")
    return iso, f"{moment.day} {moment.strftime('%b %Y, %H:%M UTC')}"


def human_period(seconds: float) -> str:
    """`1 h`, `15 min`, `2 days` style lengths of time, rounded to the unit shown."""
    if seconds >= 2 * 86400:
        return f"{round(seconds / 86400)} days"
    if seconds >= 3600:
        return f"{seconds / 3600:g} h" if seconds % 1800 == 0 else f"{round(seconds / 3600)} h"
    if seconds >= 60:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds)} s"


def _attempt_text(record: JobRecord, *, retrying: bool, waiting: bool) -> str:
    # During the backoff the failed attempt is history; what matters is the one to come.
    if waiting:
        return f"Next: attempt {record.attempt + 1} of {record.max_attempts}"
    if retrying:
        return f"Attempt {record.attempt} of {record.max_attempts}"
    return ""


def _error_text(record: JobRecord) -> str:
    if record.status is JobState.EXPIRED:
        return "The archive was deleted after its retention period. Try again to build it anew."
    if record.status is not JobState.FAILED:
        return ""
    reason = plain_words(record.error or record.last_error or "") or "an unknown error"
    attempts = record.attempt or 1
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    return f"The archive could not be built after {tries}. Reason: {reason}"
