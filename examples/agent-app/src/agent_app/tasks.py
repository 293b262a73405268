"""Celery tasks. Each worker process lazily builds its own :class:`AgentService`."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import shared_task
from celery.signals import worker_process_shutdown

from agent_app.cache import HEARTBEAT_KEY
from agent_app.celery_app import EXECUTE_RUN_TASK, HEARTBEAT_TASK
from agent_app.service import AgentService
from agent_app.settings import load_settings

log = logging.getLogger(__name__)

_service: AgentService | None = None
_service_lock = threading.Lock()


def get_service() -> AgentService:
    """The per-process service, created after fork (connection pools must not cross a fork)."""
    global _service
    with _service_lock:
        if _service is None:
            _service = AgentService(load_settings())
        return _service


@worker_process_shutdown.connect
def _close_service(**_: Any) -> None:
    global _service
    with _service_lock:
        if _service is not None:
            _service.close()
            _service = None


@shared_task(name=EXECUTE_RUN_TASK)
def execute_run(run_id: str) -> str:
    """Execute a queued agent run and return its final status."""
    status = get_service().execute_queued(uuid.UUID(run_id))
    log.info("queued run processed", extra={"run_id": run_id, "run_status": status})
    return status


@shared_task(name=HEARTBEAT_TASK, ignore_result=True)
def heartbeat() -> str:
    """Periodic (beat) task: record that workers are alive."""
    now = datetime.now(UTC).isoformat()
    get_service().redis.set(HEARTBEAT_KEY, now)
    return now
