import json
import logging
import sys

import pytest

from agent_app.llm import FakeChatModel, split_tokens
from agent_app.logs import JsonFormatter, request_id_var
from agent_app.tools import find_expression, run_tool


@pytest.mark.parametrize(
    ("text", "expected"),
    [("what is 2 + 3 * 4?", "2 + 3 * 4 = 14"), ("(1+2)*3", "(1+2)*3 = 9"), ("7 / 2", "7 / 2 = 3.5")],
)
def test_calculator(text: str, expected: str) -> None:
    expression = find_expression(text)
    assert expression is not None
    assert run_tool("calculator", expression) == expected


def test_calculator_refuses_anything_but_arithmetic() -> None:
    assert run_tool("calculator", "__import__('os')").startswith("error:")
    assert run_tool("calculator", "1/0") == "error: division by zero"
    assert run_tool("calculator", "2**100000") == "error: exponent too large"
    assert run_tool("nope", "x") == "error: unknown tool 'nope'"


def test_word_count_and_tokens() -> None:
    assert run_tool("word_count", "one two  three") == "3 words, 14 characters"
    assert "".join(split_tokens("a  b c")) == "a  b c"


def test_fake_model_is_deterministic() -> None:
    model = FakeChatModel()
    messages = [{"role": "user", "content": "hello"}]
    assert model.complete(messages) == model.complete(messages)
    assert "".join(model.stream(messages)) == model.complete(messages)


def test_json_log_line_format() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "agent_app.access", logging.INFO, __file__, 1, "GET %s %d", ("/health", 200), None
    )
    record.method, record.path, record.status, record.duration = "GET", "/health", 200, 0.0012
    token = request_id_var.set("req-1")
    try:
        line = formatter.format(record)
    finally:
        request_id_var.reset(token)
    assert "\n" not in line
    payload = json.loads(line)
    assert payload["level"] == "INFO"
    assert payload["logger"] == "agent_app.access"
    assert payload["message"] == "GET /health 200"
    assert payload["request_id"] == "req-1"
    assert payload["status"] == 200 and payload["duration"] == 0.0012
    assert payload["ts"].endswith("+00:00")


def test_json_log_includes_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    payload = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in payload["exception"]
