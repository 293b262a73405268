"""The ``openai`` provider against a tiny OpenAI-compatible server on 127.0.0.1."""

import dataclasses
import json
import threading
from collections.abc import Iterator
from typing import ClassVar
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from agent_app import prompts
from agent_app.api import create_app
from agent_app.llm import LLMError, OpenAIChatModel
from agent_app.settings import Settings

API_KEY = "sk-test-local"
ANSWER_CHUNKS = ["Two ", "plus ", "two ", "is ", "4."]


class FakeOpenAI(BaseHTTPRequestHandler):
    """Plans with the calculator, streams the answer in chunks; fails when told to."""

    requests: ClassVar[list[dict]] = []
    fail: ClassVar[bool] = False

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        if self.path != "/v1/chat/completions" or FakeOpenAI.fail:
            self.send_error(500 if FakeOpenAI.fail else 404)
            return
        if body["messages"][0]["content"] == prompts.PLANNER_PROMPT:
            content = "TOOL: calculator\nARGUMENT: 2 + 2"
        else:
            content = "".join(ANSWER_CHUNKS)
        if body.get("stream"):
            self._stream()
        else:
            self._json({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    def _json(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b": keep-alive comment\n\n")
        self.wfile.write(b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n')
        for chunk in ANSWER_CHUNKS:
            event = {"choices": [{"index": 0, "delta": {"content": chunk}}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True


@pytest.fixture
def openai_url() -> Iterator[str]:
    FakeOpenAI.requests = []
    FakeOpenAI.fail = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_complete_and_stream(openai_url: str) -> None:
    model = OpenAIChatModel(openai_url, "test-model", API_KEY, timeout=5)
    try:
        reply = model.complete(
            [{"role": "system", "content": prompts.PLANNER_PROMPT}, {"role": "user", "content": "x"}]
        )
        tokens = list(model.stream([{"role": "user", "content": "answer"}]))
    finally:
        model.close()
    assert reply == "TOOL: calculator\nARGUMENT: 2 + 2"
    assert tokens == ANSWER_CHUNKS
    first, second = FakeOpenAI.requests
    assert first["auth"] == f"Bearer {API_KEY}"
    assert first["body"]["model"] == "test-model" and first["body"]["stream"] is False
    assert second["body"]["stream"] is True


def test_http_errors_become_llm_errors(openai_url: str) -> None:
    FakeOpenAI.fail = True
    model = OpenAIChatModel(openai_url, "test-model", API_KEY, timeout=5)
    try:
        with pytest.raises(LLMError, match="HTTP 500"):
            model.complete([{"role": "user", "content": "x"}])
        with pytest.raises(LLMError, match="HTTP 500"):
            list(model.stream([{"role": "user", "content": "x"}]))
    finally:
        model.close()


def test_agent_runs_through_openai_provider(openai_url: str, settings: Settings) -> None:
    openai_settings = dataclasses.replace(
        settings, llm_provider="openai", llm_base_url=openai_url, llm_model="test-model", llm_api_key=API_KEY
    )
    with TestClient(create_app(openai_settings)) as client:
        response = client.post("/v1/agent/invoke", json={"input": "what is two plus two?"})
        assert response.status_code == 200, response.text
        assert response.json()["output"] == "Two plus two is 4."
        assert 'llm_calls_total{provider="openai",status="ok"}' in client.get("/metrics").text
        FakeOpenAI.fail = True
        failed = client.post("/v1/agent/invoke", json={"input": "a different question"})
        metrics = client.get("/metrics").text
    assert failed.status_code == 502
    assert 'llm_calls_total{provider="openai",status="error"}' in metrics
    answer_request = FakeOpenAI.requests[1]["body"]["messages"][-1]["content"]
    assert "Tool result: 2 + 2 = 4" in answer_request
