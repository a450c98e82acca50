"""Route groups are declared once (backend/routes.py) and read by every HTTP concern."""

from __future__ import annotations

import re

import pytest

from backend.routes import (
    CSRF_EXEMPT_GROUPS,
    QUIET_GROUPS,
    RouteGroup,
    group_of,
    path_patterns,
)


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("/v1/download/async", RouteGroup.API),
        ("/v1/files", RouteGroup.API),
        ("/health", RouteGroup.HEALTH),
        ("/healthz", RouteGroup.PAGES),
        ("/docs", RouteGroup.DOCS),
        ("/docs/openapi.json", RouteGroup.DOCS),
        ("/docsx", RouteGroup.PAGES),
        ("/static/app.css", RouteGroup.STATIC),
        ("/static", RouteGroup.PAGES),
        ("/ops", RouteGroup.OPS),
        ("/ops/stats", RouteGroup.OPS),
        ("/metrics", RouteGroup.METRICS),
        ("/metrics/x", RouteGroup.PAGES),
        ("/", RouteGroup.PAGES),
        ("/events", RouteGroup.PAGES),
        ("/v1", RouteGroup.PAGES),
    ],
)
def test_every_path_belongs_to_exactly_the_group_its_prefix_says(
    path: str, group: RouteGroup
) -> None:
    assert group_of(path) is group


@pytest.mark.parametrize("groups", [CSRF_EXEMPT_GROUPS, QUIET_GROUPS])
def test_path_patterns_match_the_same_paths_as_group_of(groups: frozenset[RouteGroup]) -> None:
    patterns = [re.compile(p) for p in path_patterns(groups)]
    for path in [
        "/v1/files",
        "/health",
        "/healthz",
        "/docs",
        "/docs/x",
        "/docsx",
        "/static/a",
        "/ops",
        "/metrics",
        "/metricsx",
        "/",
        "/jobs/1/live",
    ]:
        matched = any(p.search(path) for p in patterns)
        assert matched == (group_of(path) in groups), path
