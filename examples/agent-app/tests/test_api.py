import dataclasses
import json
import logging
import uuid

import psycopg
import pytest
from fastapi.testclient import TestClient
from langgraph.checkpoint.postgres import PostgresSaver

from agent_app import __version__
from agent_app.api import create_app
from agent_app.db import CONNECTION_KWARGS
from agent_app.graph import thread_config
from agent_app.logs import JsonFormatter
from agent_app.settings import Settings


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


def test_invoke_records_run_and_checkpoint(
    client: TestClient, db: psycopg.Connection, settings: Settings
) -> None:
    response = client.post("/v1/agent/invoke", json={"input": "what is 6 * 7", "thread_id": "thread-a"})
    assert response.status_code == 200
    body = response.json()
    assert body["thread_id"] == "thread-a"
    assert body["cached"] is False
    assert "6 * 7 = 42" in body["output"]

    row = db.execute(
        "SELECT thread_id, input, output, status, source, finished_at FROM agent_runs WHERE id = %s",
        (uuid.UUID(body["run_id"]),),
    ).fetchone()
    assert row is not None
    assert row[:5] == ("thread-a", "what is 6 * 7", body["output"], "succeeded", "api")
    assert row[5] is not None

    client.post("/v1/agent/invoke", json={"input": "count these four words", "thread_id": "thread-a"})
    with psycopg.connect(settings.database_url, **CONNECTION_KWARGS) as conn:
        saver = PostgresSaver(conn)
        checkpoints = list(saver.list(thread_config("thread-a")))
        latest = saver.get_tuple(thread_config("thread-a"))
    assert len(checkpoints) >= 8  # input + 3 nodes, twice
    assert latest is not None
    history = latest.checkpoint["channel_values"]["history"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[2]["content"] == "count these four words"


def test_second_identical_invoke_is_cached(client: TestClient, db: psycopg.Connection) -> None:
    first = client.post("/v1/agent/invoke", json={"input": "what is 1 + 1"}).json()
    second = client.post("/v1/agent/invoke", json={"input": "what is 1 + 1"}).json()
    assert first["cached"] is False
    assert second["cached"] is True
    assert second["output"] == first["output"]
    assert second["run_id"] != first["run_id"]
    cached_flags = db.execute("SELECT cached FROM agent_runs ORDER BY created_at").fetchall()
    assert cached_flags == [(False,), (True,)]


def test_invoke_validates_input(client: TestClient) -> None:
    assert client.post("/v1/agent/invoke", json={"input": ""}).status_code == 422
    assert client.post("/v1/agent/invoke", json={}).status_code == 422


def test_get_run_not_found_and_invalid(client: TestClient) -> None:
    assert client.get(f"/v1/agent/runs/{uuid.uuid4()}").status_code == 404
    assert client.get("/v1/agent/runs/not-a-uuid").status_code == 422


def test_ready_with_dependencies(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


def test_ready_fails_when_redis_is_down(settings: Settings) -> None:
    broken = dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(broken)) as client:
        response = client.get("/ready")
        assert client.get("/health").status_code == 200
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"postgres": "ok", "redis": "unavailable"}}


def test_metrics_use_route_templates(client: TestClient) -> None:
    run_id = uuid.uuid4()
    client.get(f"/v1/agent/runs/{run_id}")
    client.post("/v1/agent/invoke", json={"input": "metrics please"})
    client.get("/does-not-exist")
    text = client.get("/metrics").text
    assert 'http_requests_total{method="GET",route="/v1/agent/runs/{run_id}",status="404"}' in text
    assert 'http_requests_total{method="POST",route="/v1/agent/invoke",status="200"}' in text
    assert 'http_requests_total{method="GET",route="unmatched",status="404"}' in text
    assert 'http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/agent/invoke"}' in text
    assert "http_requests_in_flight" in text
    assert 'agent_runs_total{source="api",status="succeeded"}' in text
    assert 'llm_calls_total{provider="fake",status="ok"}' in text
    assert 'llm_call_duration_seconds_bucket{le="0.05",provider="fake"}' in text
    assert str(run_id) not in text
    assert "/does-not-exist" not in text


def test_request_id_is_echoed_and_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agent_app.access"):
        response = client.get("/health", headers={"X-Request-ID": "req-123"})
    assert response.headers["X-Request-ID"] == "req-123"
    generated = client.get("/health").headers["X-Request-ID"]
    assert len(generated) == 32
    assert client.get("/health", headers={"X-Request-ID": "bad id\n"}).headers["X-Request-ID"] != "bad id\n"

    record = next(r for r in caplog.records if r.name == "agent_app.access")
    payload = json.loads(JsonFormatter().format(record))
    assert payload["request_id"] == "req-123"
    assert payload["method"] == "GET" and payload["path"] == "/health" and payload["status"] == 200
    assert {"ts", "level", "logger", "message", "duration"} <= payload.keys()
