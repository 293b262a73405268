import os
import subprocess
import sys
import uuid

import psycopg

from agent_app.migrations import MIGRATIONS, migrate
from conftest import DATABASE_URL, url_with_schema


def test_migrate_is_idempotent() -> None:
    assert DATABASE_URL
    schema = f"agent_migrate_{uuid.uuid4().hex[:10]}"
    url = url_with_schema(DATABASE_URL, schema)
    with psycopg.connect(DATABASE_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            assert migrate(url) == [version for version, _, _ in MIGRATIONS]
            assert migrate(url) == []
            with psycopg.connect(url) as conn:
                tables = {
                    row[0]
                    for row in conn.execute(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
                    )
                }
                versions = [
                    row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")
                ]
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    assert {
        "agent_runs",
        "schema_migrations",
        "checkpoints",
        "checkpoint_writes",
        "checkpoint_migrations",
    } <= tables
    assert versions == [1, 2, 3]


def test_migrate_command_fails_clearly() -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql://agent:agent@127.0.0.1:1/agent"}
    result = subprocess.run(
        [sys.executable, "-m", "agent_app", "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.startswith("agent-app migrate: failed:")


def test_migrate_command_succeeds_on_current_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent_app", "migrate"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "schema already up to date" in result.stdout
