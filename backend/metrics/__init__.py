"""Prometheus metrics: what each process counts, and where it is scraped.

Each process kind has a registry of its own, so a scrape shows only what that process does:

| module | process | scraped at |
| --- | --- | --- |
| `api.py`, `http.py` (request layer, `GET /metrics`) | API | `/metrics` on the API's port |
| `worker.py`, `queuestate.py` (Redis, at scrape time) | worker | `:METRICS_PORT/metrics` |

`exporter.py` serves the worker's registry.

Names and labels are the agreed ones (README, "Metrics"); deploy/grafana and deploy/prometheus
use them and tests/test_metrics.py checks every name they use against real scrapes. Labels take
only bounded values: route templates, never raw paths; kinds and outcomes, never job ids.
"""

from prometheus_client import disable_created_metrics

# No `<name>_created` twin of every counter and histogram series: it doubles the series, and
# Prometheus detects counter resets without it.
disable_created_metrics()
