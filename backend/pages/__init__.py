"""htmx pages and the fragments they swap."""

from __future__ import annotations

from typing import Any


def page_routes() -> list[Any]:
    """Route handlers of the browser pages."""
    return []
