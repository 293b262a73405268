"""Agent runs: the graph plus run bookkeeping in PostgreSQL and the answer cache in Redis."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg_pool import ConnectionPool

from agent_app.cache import AnswerCache, create_redis
from agent_app.db import RunStore, create_pool
from agent_app.graph import build_graph, thread_config
from agent_app.llm import ChatModel, build_chat_model
from agent_app.metrics import AGENT_RUNS
from agent_app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """Outcome of a synchronous agent run."""

    run_id: uuid.UUID
    thread_id: str
    output: str
    cached: bool


class AgentService:
    """Everything a process needs to execute agent runs; one instance per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: ConnectionPool = create_pool(settings)
        self.redis: redis.Redis = create_redis(settings.redis_url)
        self.model: ChatModel = build_chat_model(settings)
        self.checkpointer = PostgresSaver(self.pool)
        self.graph = build_graph(self.model, self.checkpointer)
        self.runs = RunStore(self.pool)
        self.cache = AnswerCache(
            self.redis,
            settings.cache_ttl_seconds,
            f"{settings.llm_provider}:{settings.llm_model}",
            settings.app_secret_key,
        )

    def close(self) -> None:
        self.model.close()
        self.redis.close()
        self.pool.close()

    def invoke(self, text: str, thread_id: str | None = None) -> RunResult:
        """Run the agent now (API path), answering identical inputs from the cache."""
        thread_id = thread_id or str(uuid.uuid4())
        run_id = self.runs.create(thread_id, text, status="running", source="api")
        cached = self.cache.get(text)
        if cached is not None:
            self._finish(run_id, "api", output=cached, cached=True)
            return RunResult(run_id, thread_id, cached, cached=True)
        output = self._execute(run_id, "api", text, thread_id)
        self.cache.put(text, output)
        return RunResult(run_id, thread_id, output, cached=False)

    def stream(self, text: str, thread_id: str, on_token: Callable[[str], None]) -> RunResult:
        """Run the agent, calling ``on_token`` for each answer token as the model produces it."""
        run_id = self.runs.create(thread_id, text, status="running", source="api")

        def run_graph() -> str:
            answer = ""
            for mode, chunk in self.graph.stream(
                {"input": text}, thread_config(thread_id), stream_mode=["custom", "values"]
            ):
                if mode == "custom":
                    on_token(chunk["token"])
                else:
                    answer = chunk.get("answer", answer)
            return answer

        output = self._guarded(run_id, "api", run_graph)
        return RunResult(run_id, thread_id, output, cached=False)

    def enqueue(self, text: str, thread_id: str | None = None) -> tuple[uuid.UUID, str]:
        """Record a queued run; the caller hands the id to the worker."""
        thread_id = thread_id or str(uuid.uuid4())
        return self.runs.create(thread_id, text, status="queued", source="worker"), thread_id

    def execute_queued(self, run_id: uuid.UUID) -> str:
        """Execute a queued run (worker path); returns the final status."""
        run = self.runs.claim(run_id, self.settings.broker_visibility_timeout_seconds)
        if run is None:
            current = self.runs.get(run_id)
            log.warning("run is not queued, skipping", extra={"run_id": str(run_id)})
            return current.status if current else "missing"
        try:
            self._execute(run_id, "worker", run.input, run.thread_id)
        except Exception:  # already logged and recorded as failed by _guarded
            return "failed"
        return "succeeded"

    def _execute(self, run_id: uuid.UUID, source: str, text: str, thread_id: str) -> str:
        def run_graph() -> str:
            return self.graph.invoke({"input": text}, thread_config(thread_id))["answer"]

        return self._guarded(run_id, source, run_graph)

    def _guarded(self, run_id: uuid.UUID, source: str, work: Callable[[], str]) -> str:
        """Run ``work`` and record the run as succeeded or failed."""
        try:
            output = work()
        except Exception as exc:
            log.exception("agent run failed", extra={"run_id": str(run_id)})
            self._finish(run_id, source, error=f"{type(exc).__name__}: {exc}")
            raise
        self._finish(run_id, source, output=output)
        return output

    def _finish(
        self,
        run_id: uuid.UUID,
        source: str,
        *,
        output: str | None = None,
        error: str | None = None,
        cached: bool = False,
    ) -> None:
        status = "failed" if error is not None else "succeeded"
        self.runs.finish(run_id, output=output, error=error, cached=cached)
        AGENT_RUNS.labels(source=source, status=status).inc()
        log.info("agent run finished", extra={"run_id": str(run_id), "run_status": status, "cached": cached})
