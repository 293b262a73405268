"""Prometheus metrics (exported by the API process from the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
HTTP_IN_FLIGHT = Gauge("http_requests_in_flight", "HTTP requests currently being served.")
AGENT_RUNS = Counter("agent_runs_total", "Finished agent runs.", ("source", "status"))
LLM_CALLS = Counter("llm_calls_total", "Calls made to the chat model.", ("provider",))
