"""htmx pages and the fragments they swap."""

from __future__ import annotations

from typing import Any

from backend.pages.downloads import (
    cancel,
    download,
    downloads_panel,
    index,
    job_live,
    retry,
    start_download,
)
from backend.pages.stream import job_stream


def page_routes() -> list[Any]:
    """Route handlers of the browser pages."""
    return [
        index,
        downloads_panel,
        start_download,
        job_live,
        cancel,
        retry,
        download,
        job_stream,
    ]
