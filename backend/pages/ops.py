"""The operator page, /ops: dependencies, queue, workers, jobs by state, failures, durations.

The page polls its stats fragment with htmx, so it stays live without a stream of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from litestar import get
from litestar.response import Template

from backend.models import JobState
from backend.ops import Failure, OpsStats, gather_stats
from backend.pages.views import STATE_LABELS
from backend.routes import OPS_PATH
from backend.services import Services

NO_STORE = {"Cache-Control": "no-store"}
REFRESH_SECONDS = 3
STATS_TEMPLATE = "partials/ops_stats.html"


def seconds_text(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def clock(timestamp: float) -> tuple[str, str]:
    """(ISO 8601, HH:MM:SS UTC) of a Unix time."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z"), moment.strftime(
        "%H:%M:%S UTC"
    )


@dataclass(frozen=True, slots=True)
class FailureRow:
    job_ref: str
    error: str
    attempts: int
    when_iso: str
    when_text: str
    trace_id: str


def failure_row(failure: Failure) -> FailureRow:
    when_iso, when_text = clock(failure.failed_at)
    return FailureRow(
        job_ref=failure.job_ref,
        error=failure.error,
        attempts=failure.attempts,
        when_iso=when_iso,
        when_text=when_text,
        trace_id=failure.trace_id or "",
    )


def stats_context(stats: OpsStats) -> dict[str, object]:
    updated_iso, updated_text = clock(stats.generated_at)
    states = [
        {
            "state": state.value,
            "label": STATE_LABELS.get(state, state.value.title()),
            "count": stats.by_state.get(state.value, 0),
        }
        for state in JobState
    ]
    durations = stats.durations
    return {
        "stats": stats,
        "states": states,
        "failures": [failure_row(f) for f in stats.failures],
        "run_p50": seconds_text(durations.run_p50),
        "run_p95": seconds_text(durations.run_p95),
        "total_p50": seconds_text(durations.total_p50),
        "total_p95": seconds_text(durations.total_p95),
        "updated_iso": updated_iso,
        "updated_text": updated_text,
        "refresh_seconds": REFRESH_SECONDS,
    }


@get(OPS_PATH, include_in_schema=False)
async def ops_page(services: Services) -> Template:
    """The operator page; its stats refresh themselves every few seconds."""
    context = stats_context(await gather_stats(services))
    return Template("ops.html", context=context, headers=NO_STORE)


@get(f"{OPS_PATH}/stats", include_in_schema=False)
async def ops_stats(services: Services) -> Template:
    """The stats fragment the page polls."""
    context = stats_context(await gather_stats(services))
    return Template(STATS_TEMPLATE, context=context, headers=NO_STORE)
