"""htmx pages and the fragments they swap."""

from __future__ import annotations

from typing import Any

from backend.pages.catalogue import catalogue_results
from backend.pages.downloads import (
    cancel,
    download,
    downloads_panel,
    index,
    job_live,
    retry,
    start_download,
)
from backend.pages.history import clear_finished, job_head, older_jobs
from backend.pages.ops import ops_page, ops_stats
from backend.pages.stream import job_stream


def page_routes() -> list[Any]:
    """Route handlers of the browser pages, the operator's included."""
    return [
        index,
        catalogue_results,
        downloads_panel,
        older_jobs,
        clear_finished,
        start_download,
        job_live,
        job_head,
        cancel,
        retry,
        download,
        job_stream,
        ops_page,
        ops_stats,
    ]
