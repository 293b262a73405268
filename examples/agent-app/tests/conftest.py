"""Test fixtures. Tests run against REAL PostgreSQL and Redis given by
AGENT_APP_TEST_DATABASE_URL and AGENT_APP_TEST_REDIS_URL (see scripts/test-services.sh).

Each test session works in its own PostgreSQL schema (dropped at the end); tables and the
app's Redis keys are emptied before every test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from agent_app.api import create_app
from agent_app.migrations import migrate
from agent_app.settings import Settings, load_settings

DATABASE_URL = os.environ.get("AGENT_APP_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("AGENT_APP_TEST_REDIS_URL")
SCHEMA = f"agent_test_{uuid.uuid4().hex[:10]}"
APP_TABLES = ("agent_runs", "checkpoints", "checkpoint_blobs", "checkpoint_writes")


def pytest_configure(config: pytest.Config) -> None:
    if not DATABASE_URL or not REDIS_URL:
        raise pytest.UsageError(
            "agent-app tests need real PostgreSQL and Redis: set AGENT_APP_TEST_DATABASE_URL and "
            'AGENT_APP_TEST_REDIS_URL (run: eval "$(bash examples/agent-app/scripts/test-services.sh)").'
        )


def url_with_schema(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` as search_path."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def test_environment() -> Iterator[None]:
    """Create the session schema, migrate it and point the app's environment at it."""
    assert DATABASE_URL and REDIS_URL
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{SCHEMA}"')
    redis.Redis.from_url(REDIS_URL).flushdb()
    os.environ.update(
        DATABASE_URL=url_with_schema(DATABASE_URL, SCHEMA),
        REDIS_URL=REDIS_URL,
        LLM_PROVIDER="fake",
        STREAM_TOKEN_DELAY_SECONDS="0.05",
        LOG_LEVEL="INFO",
    )
    for name in (
        "DATABASE_URL_FILE",
        "DATABASE_HOST",
        "REDIS_PASSWORD",
        "REDIS_PASSWORD_FILE",
        "LLM_API_KEY_FILE",
    ):
        os.environ.pop(name, None)
    migrate(os.environ["DATABASE_URL"])
    yield
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{SCHEMA}" CASCADE')


@pytest.fixture(autouse=True)
def clean_state(test_environment: None) -> None:
    """Empty the app's tables and Redis keys so tests are independent."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(APP_TABLES)}")
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter("agent-app:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def db() -> Iterator[psycopg.Connection]:
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        yield conn


class Server:
    """A real ``agent-app serve`` subprocess."""

    def __init__(self, port: int, env: dict[str, str], log_path: Path, workers: int = 1) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent_app", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start ``agent-app serve`` subprocesses with extra environment; all are stopped at the end."""
    servers: list[Server] = []

    def start(workers: int = 1, **extra_env: str) -> Server:
        env = {**os.environ, **extra_env}
        server = Server(free_port(), env, tmp_path / f"server-{len(servers)}.log", workers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
