"""Metrics that operators alert on: LLM outcomes and latency, and counters summed over processes."""

import dataclasses
import re

import httpx
from fastapi.testclient import TestClient

from agent_app.api import create_app
from agent_app.settings import Settings


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name and ",".join(sorted((match[2] or "").split(","))) == wanted:
            return float(match[3])
    return 0.0


def test_stand_in_model_fails_on_its_marker(settings: Settings) -> None:
    """FAKE_LLM_FAIL_MARKER: a provider outage on demand, counted as an LLM error with its latency."""
    failing = dataclasses.replace(settings, fake_llm_fail_marker="llm-outage")
    series = [
        ("llm_calls_total", {"provider": "fake", "status": "error"}),
        ("llm_calls_total", {"provider": "fake", "status": "ok"}),
        ("llm_call_duration_seconds_count", {"provider": "fake"}),
        ("agent_runs_total", {"source": "api", "status": "failed"}),
    ]
    with TestClient(create_app(failing)) as client:
        before = client.get("/metrics").text
        ok = client.post("/v1/agent/invoke", json={"input": "what is 2 + 3"})
        failed = client.post("/v1/agent/invoke", json={"input": "llm-outage: what is 2 + 4"})
        after = client.get("/metrics").text
    assert ok.status_code == 200, ok.text
    assert failed.status_code == 502, failed.text
    # (the process-wide registry: compare the counters before and after)
    grown = [sample(after, name, **labels) - sample(before, name, **labels) for name, labels in series]
    assert grown == [1, 2, 3, 1]  # one failed plan; the other run's plan and answer

def test_one_scrape_counts_every_uvicorn_worker(server_factory) -> None:
    """With --workers 2 each process counts its own requests; /metrics must report their sum.

    Without the shared multiprocess directory a scrape reads one worker's
    counters only (about half of the requests).
    """
    server = server_factory(workers=2)
    route = {"method": "GET", "route": "/health", "status": "200"}

    def health_count() -> float:
        return sample(httpx.get(f"{server.base_url}/metrics").text, "http_requests_total", **route)

    before = health_count()
    seen = set()
    for _ in range(60):  # a new connection each time: the kernel spreads them over both workers
        with httpx.Client() as one:
            assert one.get(f"{server.base_url}/health").status_code == 200
    for _ in range(5):  # whichever worker answers the scrape reports the same sum
        seen.add(health_count())
    assert seen == {before + 60}, (before, seen)


def test_every_llm_outcome_is_exported_before_it_happens(client: TestClient) -> None:
    """An error counter that only appears with the first errors hides them from rate() (no earlier sample)."""
    text = client.get("/metrics").text
    for status in ("ok", "error", "cancelled"):
        assert f'llm_calls_total{{provider="fake",status="{status}"}}' in text
