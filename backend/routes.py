"""The app's route groups, declared once: every HTTP concern that treats paths differently
(error pages, CSRF, rate limits, access-log level, CSP, tracing) asks this module.

| group | paths | errors | CSRF | rate limit | access line | CSP | traced |
| --- | --- | --- | --- | --- | --- | --- | --- |
| API | `/v1/…` | JSON | exempt (JSON + tokens) | yes | INFO | yes | yes |
| HEALTH | `/health` | JSON | exempt | no | DEBUG | yes | no |
| DOCS | `/docs`, `/docs/…` | JSON | exempt | no | INFO | none (CDN renderer) | yes |
| STATIC | `/static/…` | JSON | — | no | DEBUG | yes | no |
| OPS | `/ops`, `/ops/…` | HTML for people | token | yes | INFO | yes | yes |
| METRICS | `/metrics` | JSON | exempt | no | DEBUG | yes | no |
| PAGES | everything else | HTML for people | token | yes | INFO | yes | yes |
"""

from __future__ import annotations

import enum
import re


class RouteGroup(enum.Enum):
    API = "api"
    HEALTH = "health"
    DOCS = "docs"
    STATIC = "static"
    OPS = "ops"
    METRICS = "metrics"
    PAGES = "pages"


API_PREFIX = "/v1/"
HEALTH_PATH = "/health"
DOCS_PATH = "/docs"
STATIC_PATH = "/static"
OPS_PATH = "/ops"
METRICS_PATH = "/metrics"

# Group -> (exact path or None, prefix or None); PAGES is what matches none of them.
_MATCH: dict[RouteGroup, tuple[str | None, str | None]] = {
    RouteGroup.API: (None, API_PREFIX),
    RouteGroup.HEALTH: (HEALTH_PATH, None),
    RouteGroup.DOCS: (DOCS_PATH, DOCS_PATH + "/"),
    RouteGroup.STATIC: (None, STATIC_PATH + "/"),
    RouteGroup.OPS: (OPS_PATH, OPS_PATH + "/"),
    RouteGroup.METRICS: (METRICS_PATH, None),
}

# People read these groups' errors as HTML pages; the rest answer JSON.
HTML_GROUPS = frozenset({RouteGroup.PAGES, RouteGroup.OPS})
# Never rate-limited: load balancers, scrapers and browsers fetch them often, and they cost
# nothing.
UNLIMITED_GROUPS = frozenset(
    {RouteGroup.HEALTH, RouteGroup.DOCS, RouteGroup.STATIC, RouteGroup.METRICS}
)
# Probes, scrapes and static files would drown the access log at INFO, and the traces.
QUIET_GROUPS = frozenset({RouteGroup.HEALTH, RouteGroup.STATIC, RouteGroup.METRICS})
# No CSRF token: the API takes only JSON bodies and bearer tokens (see jsonbody.py).
CSRF_EXEMPT_GROUPS = frozenset(
    {RouteGroup.API, RouteGroup.HEALTH, RouteGroup.DOCS, RouteGroup.METRICS}
)
# The API docs pages load their renderer from a CDN; they get no CSP of ours.
NO_CSP_GROUPS = frozenset({RouteGroup.DOCS})


def group_of(path: str) -> RouteGroup:
    """The group a request path belongs to; unknown paths are PAGES (a person may type them)."""
    for group, (exact, prefix) in _MATCH.items():
        if path == exact or (prefix is not None and path.startswith(prefix)):
            return group
    return RouteGroup.PAGES


def path_patterns(groups: frozenset[RouteGroup]) -> list[str]:
    """Regular expressions matching exactly the paths of `groups` (for Litestar's configs)."""
    patterns = []
    for group in sorted(groups, key=lambda g: g.value):
        exact, prefix = _MATCH[group]
        if exact is not None:
            patterns.append(f"^{re.escape(exact)}$")
        if prefix is not None:
            patterns.append(f"^{re.escape(prefix)}")
    return patterns
