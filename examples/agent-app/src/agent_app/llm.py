"""Chat models: a deterministic local stand-in and an OpenAI-compatible HTTP client."""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator

import httpx

from agent_app import prompts
from agent_app.metrics import LLM_CALLS, LLM_DURATION
from agent_app.settings import Settings
from agent_app.tools import find_expression

Message = dict[str, str]

_TOKEN_RE = re.compile(r"\S+\s*")


class LLMError(RuntimeError):
    """The chat model could not produce a reply."""


def split_tokens(text: str) -> list[str]:
    """Split text into word tokens that keep their trailing whitespace (joining gives the text back)."""
    return _TOKEN_RE.findall(text)


class ChatModel(ABC):
    """A chat model that answers a list of ``{"role", "content"}`` messages."""

    provider: str

    def complete(self, messages: list[Message]) -> str:
        """Return the whole reply."""
        started, status = time.monotonic(), "error"
        try:
            reply = self._complete(messages)
            status = "ok"
            return reply
        finally:
            self._observe(started, status)

    def stream(self, messages: list[Message]) -> Iterator[str]:
        """Yield the reply piece by piece."""
        started, status = time.monotonic(), "error"
        try:
            yield from self._stream(messages)
            status = "ok"
        except GeneratorExit:
            status = "cancelled"  # the reader went away: not the provider's failure
            raise
        finally:
            self._observe(started, status)

    def _observe(self, started: float, status: str) -> None:
        LLM_CALLS.labels(provider=self.provider, status=status).inc()
        LLM_DURATION.labels(provider=self.provider).observe(time.monotonic() - started)

    def close(self) -> None:  # noqa: B027 - optional hook, most models hold nothing
        """Release resources held by the model."""

    @abstractmethod
    def _complete(self, messages: list[Message]) -> str: ...

    @abstractmethod
    def _stream(self, messages: list[Message]) -> Iterator[str]: ...


class FakeChatModel(ChatModel):
    """Deterministic stand-in: plans with a regex and phrases the tool result as the answer."""

    provider = "fake"

    def __init__(self, delay_seconds: float = 0.0, fail_marker: str = "") -> None:
        # A slow model on demand (FAKE_LLM_DELAY_SECONDS): long calls and long tasks in tests.
        self.delay_seconds = delay_seconds
        # A failing provider on demand (FAKE_LLM_FAIL_MARKER): a request whose
        # text contains the marker fails like a provider's HTTP 5xx would.
        self.fail_marker = fail_marker

    def _complete(self, messages: list[Message]) -> str:
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if self.fail_marker and any(self.fail_marker in m["content"] for m in messages):
            raise LLMError("chat completion failed: HTTP 503 (stand-in provider outage)")
        if system == prompts.PLANNER_PROMPT:
            expression = find_expression(user)
            plan = prompts.Plan("calculator", expression) if expression else prompts.Plan("word_count", user)
            return prompts.format_plan(plan)
        parsed = prompts.parse_answer_request(user)
        if parsed is None:
            return f"You said: {user}"
        _, tool, result = parsed
        if tool == "calculator":
            return f"I used the calculator tool and found that {result}."
        return f"I used the {tool} tool: your request has {result}."

    def _stream(self, messages: list[Message]) -> Iterator[str]:
        yield from split_tokens(self._complete(messages))


class OpenAIChatModel(ChatModel):
    """Client for an OpenAI-compatible ``/chat/completions`` endpoint."""

    provider = "openai"

    def __init__(self, base_url: str, model: str, api_key: str, timeout: float = 30.0) -> None:
        self.model = model
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._client.close()

    def _payload(self, messages: list[Message], stream: bool) -> dict[str, object]:
        return {"model": self.model, "messages": messages, "temperature": 0, "stream": stream}

    def _complete(self, messages: list[Message]) -> str:
        try:
            response = self._client.post("chat/completions", json=self._payload(messages, stream=False))
        except httpx.HTTPError as exc:
            raise LLMError(f"chat completion request failed: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise LLMError(f"chat completion failed: HTTP {response.status_code}")
        try:
            return response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError("chat completion reply is malformed") from exc

    def _stream(self, messages: list[Message]) -> Iterator[str]:
        try:
            with self._client.stream(
                "POST", "chat/completions", json=self._payload(messages, stream=True)
            ) as response:
                if response.status_code >= 400:
                    raise LLMError(f"chat completion stream failed: HTTP {response.status_code}")
                for line in response.iter_lines():
                    content = _parse_stream_line(line)
                    if content is None:
                        return
                    if content:
                        yield content
        except httpx.HTTPError as exc:
            raise LLMError(f"chat completion stream failed: {type(exc).__name__}") from exc


def _parse_stream_line(line: str) -> str | None:
    """Content of one SSE line of a streamed completion: '' for no content, None at ``[DONE]``."""
    if not line.startswith("data:"):
        return ""
    data = line[len("data:") :].strip()
    if data == "[DONE]":
        return None
    try:
        choices = json.loads(data).get("choices") or [{}]
        return choices[0].get("delta", {}).get("content") or ""
    except (ValueError, AttributeError) as exc:
        raise LLMError("chat completion stream chunk is malformed") from exc


def build_chat_model(settings: Settings) -> ChatModel:
    """The chat model selected by ``LLM_PROVIDER``."""
    model: ChatModel
    if settings.llm_provider == "openai":
        if not settings.llm_api_key:
            raise LLMError("the openai provider needs LLM_API_KEY")
        model = OpenAIChatModel(
            settings.llm_base_url, settings.llm_model, settings.llm_api_key, settings.llm_timeout_seconds
        )
    else:
        model = FakeChatModel(settings.fake_llm_delay_seconds, settings.fake_llm_fail_marker)
    # Every outcome exported from the start, at 0: Prometheus's rate() cannot
    # see the first errors of a series that only appears with them.
    for status in ("ok", "error", "cancelled"):
        LLM_CALLS.labels(provider=model.provider, status=status)
    LLM_DURATION.labels(provider=model.provider)
    return model
