"""FastAPI application. Create it with :func:`create_app` (uvicorn: ``--factory``)."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import psycopg
import psycopg_pool
import redis
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from agent_app import __version__, db
from agent_app.celery_app import EXECUTE_RUN_TASK, create_celery_app
from agent_app.llm import LLMError
from agent_app.logs import configure_logging
from agent_app.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agent_app.metrics import exposition as metrics_exposition
from agent_app.middleware import ObservabilityMiddleware
from agent_app.service import AgentService, RunResult
from agent_app.settings import Settings, load_settings, redact_url

log = logging.getLogger(__name__)

MAX_INPUT_CHARS = 10_000
MAX_THREAD_ID_CHARS = 200


class InvokeRequest(BaseModel):
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    thread_id: str | None = Field(default=None, min_length=1, max_length=MAX_THREAD_ID_CHARS)


def _service(request: Request) -> AgentService:
    return request.app.state.service


def _sse(data: dict[str, object], event: str | None = None) -> str:
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse_stream(service: AgentService, text: str, thread_id: str, delay: float) -> AsyncIterator[str]:
    """Run the agent in a thread and relay its tokens as SSE events, ``delay`` seconds apart."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

    def put(kind: str, value: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def work() -> None:
        try:
            put("done", service.stream(text, thread_id, lambda token: put("token", token)))
        except Exception as exc:  # reported to the client as an error event
            put("error", exc)

    loop.run_in_executor(None, contextvars.copy_context().run, work)
    first = True
    while True:
        kind, value = await queue.get()
        if kind == "token":
            if not first:
                await asyncio.sleep(delay)
            first = False
            yield _sse({"token": value})
        elif kind == "done":
            value = cast(RunResult, value)
            yield _sse(
                {"run_id": str(value.run_id), "thread_id": value.thread_id, "output": value.output}, "done"
            )
            return
        else:
            log.error("agent stream failed: %s", type(value).__name__)
            yield _sse({"error": "agent run failed"}, "error")
            return


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API. Dependencies are connected lazily; nothing is migrated here."""
    settings = settings or load_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = AgentService(settings)
        app.state.celery = create_celery_app(settings)
        log.info(
            "agent-app started (database %s, llm provider %s)",
            redact_url(settings.database_url),
            settings.llm_provider,
        )
        try:
            yield
        finally:
            app.state.service.close()
            log.info("agent-app stopped")

    app = FastAPI(title="agent-app", version=__version__, lifespan=lifespan)
    app.add_middleware(ObservabilityMiddleware)

    @app.exception_handler(psycopg.Error)
    @app.exception_handler(psycopg_pool.PoolTimeout)
    @app.exception_handler(redis.RedisError)
    async def dependency_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.error("dependency error: %s", type(exc).__name__)
        return JSONResponse({"detail": "a backing service is unavailable"}, status_code=503)

    @app.exception_handler(LLMError)
    async def llm_failed(request: Request, exc: LLMError) -> JSONResponse:
        log.error("chat model error: %s", exc)
        return JSONResponse({"detail": "the chat model failed"}, status_code=502)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process serves HTTP (and which release it runs). Checks no dependency."""
        return {"status": "ok", "version": __version__}

    @app.get("/ready")
    def ready(request: Request) -> JSONResponse:
        """Readiness: PostgreSQL and Redis both answer."""
        service = _service(request)
        checks: dict[str, str] = {}
        try:
            db.ping(service.pool)
            checks["postgres"] = "ok"
        except Exception as exc:
            log.warning("readiness: postgres failed: %s", type(exc).__name__)
            checks["postgres"] = "unavailable"
        try:
            service.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            log.warning("readiness: redis failed: %s", type(exc).__name__)
            checks["redis"] = "unavailable"
        ok = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(metrics_exposition(), media_type=METRICS_CONTENT_TYPE)

    @app.post("/v1/agent/invoke")
    def invoke(body: InvokeRequest, request: Request) -> dict[str, object]:
        """Run the agent synchronously; identical inputs are answered from the cache."""
        result = _service(request).invoke(body.input, body.thread_id)
        return {
            "run_id": str(result.run_id),
            "thread_id": result.thread_id,
            "output": result.output,
            "cached": result.cached,
        }

    @app.post("/v1/agent/runs", status_code=202)
    def enqueue(body: InvokeRequest, request: Request, response: Response) -> dict[str, object]:
        """Queue a run for the Celery worker."""
        service = _service(request)
        run_id, thread_id = service.enqueue(body.input, body.thread_id)
        try:
            request.app.state.celery.send_task(EXECUTE_RUN_TASK, args=[str(run_id)])
        except Exception as exc:
            service.runs.finish(run_id, error="could not enqueue the run")
            log.error("enqueue failed: %s", type(exc).__name__, extra={"run_id": str(run_id)})
            raise HTTPException(status_code=503, detail="the task queue is unavailable") from exc
        response.headers["Location"] = f"/v1/agent/runs/{run_id}"
        return {"run_id": str(run_id), "thread_id": thread_id, "status": "queued"}

    @app.get("/v1/agent/runs/{run_id}")
    def get_run(run_id: uuid.UUID, request: Request) -> dict[str, object]:
        run = _service(request).runs.get(run_id)
        if run is None:
            raise HTTPException(status_code=404, detail="run not found")
        return run.to_json()

    @app.get("/v1/agent/stream")
    async def stream(
        request: Request,
        input: str = Query(min_length=1, max_length=MAX_INPUT_CHARS),
        thread_id: str | None = Query(default=None, min_length=1, max_length=MAX_THREAD_ID_CHARS),
    ) -> StreamingResponse:
        """Stream the answer token by token as Server-Sent Events, ending with ``event: done``."""
        events = _sse_stream(
            _service(request), input, thread_id or str(uuid.uuid4()), settings.stream_token_delay_seconds
        )
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app
