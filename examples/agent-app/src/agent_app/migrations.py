"""Schema migrations, run once per deployment by ``agent-app migrate`` (never by the API)."""

from __future__ import annotations

import logging

import psycopg
from langgraph.checkpoint.postgres import PostgresSaver

from agent_app.db import CONNECTION_KWARGS

log = logging.getLogger(__name__)

# (version, description, SQL). Append only; never edit an applied migration.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "create agent_runs",
        """
        CREATE TABLE IF NOT EXISTS agent_runs (
            id uuid PRIMARY KEY,
            thread_id text NOT NULL,
            input text NOT NULL,
            output text,
            status text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
            source text NOT NULL CHECK (source IN ('api', 'worker')),
            created_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        );
        CREATE INDEX IF NOT EXISTS agent_runs_thread_id_idx ON agent_runs (thread_id, created_at);
        """,
    ),
    (
        2,
        "record errors and cache hits on agent_runs",
        """
        ALTER TABLE agent_runs ADD COLUMN IF NOT EXISTS error text;
        ALTER TABLE agent_runs ADD COLUMN IF NOT EXISTS cached boolean NOT NULL DEFAULT false;
        """,
    ),
    (
        3,
        "record when and how often a worker claimed a run",
        """
        ALTER TABLE agent_runs ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
        ALTER TABLE agent_runs ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;
        """,
    ),
]

# Serialises concurrent ``migrate`` runs (arbitrary constant shared by all instances).
_LOCK_ID = 0x61676E74


def migrate(database_url: str) -> list[int]:
    """Apply pending migrations and the LangGraph checkpointer setup; return versions applied."""
    applied: list[int] = []
    with psycopg.connect(database_url, connect_timeout=10) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, description, sql in MIGRATIONS:
            if version in done:
                continue
            log.info("applying migration %d: %s", version, description)
            conn.execute(sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)", (version, description)
            )
            applied.append(version)
    # The checkpointer's own migrations use CREATE INDEX CONCURRENTLY, so they need autocommit.
    with psycopg.connect(database_url, **CONNECTION_KWARGS) as conn:
        PostgresSaver(conn).setup()
    return applied
