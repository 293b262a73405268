"""SSE streaming and graceful shutdown against a real ``agent-app serve`` process."""

import json
import signal
import time

import httpx

INPUT = "please count every word in this fairly long sentence"


def read_events(response: httpx.Response) -> list[tuple[float, str, dict]]:
    """(arrival time, event name, data) for each SSE event, as the bytes arrive."""
    events: list[tuple[float, str, dict]] = []
    name, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data = line.split(":", 1)[1].strip()
        elif line == "" and data:
            events.append((time.monotonic(), name, json.loads(data)))
            name, data = "message", ""
    return events


def test_sse_streams_tokens_incrementally(server_factory) -> None:
    delay = 0.1
    server = server_factory(STREAM_TOKEN_DELAY_SECONDS=str(delay))
    start = time.monotonic()
    with httpx.stream(
        "GET", f"{server.base_url}/v1/agent/stream", params={"input": INPUT}, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        events = read_events(response)
    tokens = [data["token"] for _, name, data in events if name == "message"]
    assert len(tokens) >= 5
    assert events[-1][1] == "done"
    done = events[-1][2]
    assert "".join(tokens).strip() == done["output"]
    first_at, end_at = events[0][0] - start, events[-1][0] - start
    minimum_total = (len(tokens) - 1) * delay
    assert end_at >= minimum_total * 0.9
    assert first_at < end_at / 3, (first_at, end_at)

    run = httpx.get(f"{server.base_url}/v1/agent/runs/{done['run_id']}").json()
    assert run["status"] == "succeeded" and run["output"] == done["output"]


def test_sigterm_lets_inflight_stream_finish(server_factory) -> None:
    server = server_factory(STREAM_TOKEN_DELAY_SECONDS="0.2", SHUTDOWN_GRACE_SECONDS="20")
    with httpx.stream(
        "GET", f"{server.base_url}/v1/agent/stream", params={"input": INPUT}, timeout=30
    ) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        assert "token" in first
        sent_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        rest = list(lines)
    assert "event: done" in rest
    assert sum(line.startswith("data:") for line in rest) >= 5
    assert time.monotonic() - sent_at >= 0.5  # the stream really continued after the signal
    assert server.process.wait(timeout=30) == 0
    log_lines = server.log_path.read_text().splitlines()
    parsed = [json.loads(line) for line in log_lines]  # every stdout line is one JSON object
    assert any(p["message"] == "GET /v1/agent/stream 200" for p in parsed)
    assert all(INPUT not in line for line in log_lines)  # query strings (user input) are not logged
