"""Prometheus metrics of the API and the worker.

One process exports its counters from the default registry. When a command
runs several processes (``serve --workers N``, the Celery worker's pool),
``PROMETHEUS_MULTIPROC_DIR`` names a directory where every process writes its
values and :func:`exposition` adds them up, so one scrape sees them all
(prometheus_client's multiprocess mode; the variable must be set before
prometheus_client is imported: :mod:`agent_app.multiproc`).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from agent_app.multiproc import MULTIPROC_ENV

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests handled, by route template.",
    ("method", "route", "status"),
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from request start to the end of the response body, by route template.",
    ("method", "route"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HTTP_IN_FLIGHT = Gauge(
    "http_requests_in_flight", "HTTP requests currently being served.", multiprocess_mode="livesum"
)
AGENT_RUNS = Counter("agent_runs_total", "Finished agent runs.", ("source", "status"))
LLM_CALLS = Counter("llm_calls_total", "Finished calls to the chat model, by outcome.", ("provider", "status"))
LLM_DURATION = Histogram(
    "llm_call_duration_seconds",
    "Time a chat model call took (a stream: until its last piece), errors included.",
    ("provider",),
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def _registry() -> CollectorRegistry | None:
    if not os.environ.get(MULTIPROC_ENV):
        return None
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def serve_metrics(address: str, port: int) -> None:
    """Serve /metrics from a thread of this process (the Celery worker's main process)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=address, registry=_registry() or REGISTRY)


def exposition() -> bytes:
    """The metrics of this process, or of every process sharing the multiprocess directory."""
    return generate_latest(_registry() or REGISTRY)

