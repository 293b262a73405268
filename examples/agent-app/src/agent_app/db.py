"""PostgreSQL access: connection pool and the ``agent_runs`` table."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from agent_app.settings import Settings

# Connection options required by langgraph's PostgresSaver (it also runs our own queries fine).
CONNECTION_KWARGS: dict[str, Any] = {
    "autocommit": True,
    "prepare_threshold": 0,
    "row_factory": dict_row,
    "connect_timeout": 5,
}


def create_pool(settings: Settings) -> ConnectionPool:
    """Open a pool without waiting: the API must start even when PostgreSQL is down."""
    pool = ConnectionPool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        kwargs=CONNECTION_KWARGS,
        open=False,
        name="agent-app",
    )
    pool.open(wait=False)
    return pool


@dataclass(frozen=True)
class Run:
    """One row of ``agent_runs``."""

    id: uuid.UUID
    thread_id: str
    input: str
    output: str | None
    error: str | None
    status: str
    source: str
    cached: bool
    created_at: datetime
    finished_at: datetime | None
    claimed_at: datetime | None = None
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "thread_id": self.thread_id,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "status": self.status,
            "source": self.source,
            "cached": self.cached,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "attempts": self.attempts,
        }


class RunStore:
    """Create, update and read rows of ``agent_runs``."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def create(self, thread_id: str, text: str, status: str, source: str) -> uuid.UUID:
        run_id = uuid.uuid4()
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO agent_runs (id, thread_id, input, status, source) VALUES (%s, %s, %s, %s, %s)",
                (run_id, thread_id, text, status, source),
            )
        return run_id

    def claim(self, run_id: uuid.UUID, lease_seconds: float = 3600.0) -> Run | None:
        """Move a ``queued`` run to ``running``; None if it is not queued (e.g. a redelivery).

        A run ``running`` for longer than ``lease_seconds`` (the broker's visibility timeout:
        the broker redelivers a task only that long after a worker took it and never
        acknowledged it) was abandoned by a worker that died: it is claimed again.
        """
        with self._pool.connection() as conn:
            row = conn.execute(
                "UPDATE agent_runs SET status = 'running', claimed_at = now(), attempts = attempts + 1"
                " WHERE id = %s AND (status = 'queued' OR (status = 'running'"
                " AND claimed_at < now() - make_interval(secs => %s))) RETURNING *",
                (run_id, lease_seconds),
            ).fetchone()
        return Run(**row) if row else None

    def finish(
        self, run_id: uuid.UUID, *, output: str | None = None, error: str | None = None, cached: bool = False
    ) -> None:
        status = "failed" if error is not None else "succeeded"
        with self._pool.connection() as conn:
            conn.execute(
                "UPDATE agent_runs SET status = %s, output = %s, error = %s, cached = %s, finished_at = now()"
                " WHERE id = %s",
                (status, output, error, cached, run_id),
            )

    def get(self, run_id: uuid.UUID) -> Run | None:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT * FROM agent_runs WHERE id = %s", (run_id,)).fetchone()
        return Run(**row) if row else None


def ping(pool: ConnectionPool, timeout: float = 2.0) -> None:
    """Raise if PostgreSQL does not answer ``SELECT 1`` within ``timeout`` seconds."""
    with pool.connection(timeout=timeout) as conn:
        conn.execute("SELECT 1")
