"""Queued runs executed by a REAL Celery worker (``agent-app worker`` subprocess) and beat."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from agent_app.cache import HEARTBEAT_KEY
from conftest import REDIS_URL, free_port
from test_metrics import sample

WORKER_METRICS_PORT = free_port()


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agent_app", *args], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def _stop(process: subprocess.Popen) -> int:
    process.terminate()
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@pytest.fixture(scope="module")
def celery_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One worker and one beat (heartbeat every second) shared by this module's tests."""
    tmp_path = tmp_path_factory.mktemp("celery")
    env = {
        **os.environ,
        "HEARTBEAT_INTERVAL_SECONDS": "1",
        "CELERY_BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule"),
        "WORKER_CONCURRENCY": "1",
        "WORKER_METRICS_PORT": str(WORKER_METRICS_PORT),
    }
    # The prefork pool, as deployed: a task runs in a child process, and the
    # main process serves the children's metrics.
    worker = _start(["worker", "--without-mingle", "--without-gossip"], tmp_path / "worker.log", env)
    beat = _start(["beat"], tmp_path / "beat.log", env)
    try:
        yield tmp_path
    finally:
        beat_status, worker_status = _stop(beat), _stop(worker)
    assert worker_status == 0, (tmp_path / "worker.log").read_text()
    assert beat_status == 0, (tmp_path / "beat.log").read_text()


def _wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


def test_enqueued_run_starts_queued(client: TestClient) -> None:
    """Runs before the worker fixture starts (module order), so nothing consumes the task yet."""
    body = client.post("/v1/agent/runs", json={"input": "no worker is running"}).json()
    run = client.get(f"/v1/agent/runs/{body['run_id']}").json()
    assert run["status"] == "queued"
    assert run["source"] == "worker"


def test_queued_run_is_executed_by_worker(client: TestClient, celery_processes: Path) -> None:
    response = client.post("/v1/agent/runs", json={"input": "what is 12 * 12", "thread_id": "queued-thread"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert response.headers["Location"] == f"/v1/agent/runs/{body['run_id']}"

    def finished() -> dict | None:
        run = client.get(f"/v1/agent/runs/{body['run_id']}").json()
        return run if run["status"] in ("succeeded", "failed") else None

    run = _wait_for(finished)
    assert run, (celery_processes / "worker.log").read_text()
    assert run["status"] == "succeeded", run
    assert run["source"] == "worker"
    assert run["thread_id"] == "queued-thread"
    assert "12 * 12 = 144" in run["output"]
    assert run["finished_at"] is not None
    metrics = httpx.get(f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics").text
    assert sample(metrics, "agent_runs_total", source="worker", status="succeeded") >= 1, metrics
    assert sample(metrics, "llm_calls_total", provider="fake", status="ok") >= 2, metrics


def test_beat_schedules_heartbeat(celery_processes: Path) -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    beat = _wait_for(lambda: client.get(HEARTBEAT_KEY))
    assert beat, (celery_processes / "beat.log").read_text() + (celery_processes / "worker.log").read_text()
    assert beat.endswith("+00:00")


def _ping(node: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The container healthcheck's probe, `agent-app ping beat` (here with the test beat's node name)."""
    return subprocess.run(
        [sys.executable, "-m", "agent_app", "ping", "beat", "--timeout", "2", "--node", node],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_worker_answers_liveness_ping(celery_processes: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "agent_app", "ping", "worker"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and "pong" in result.stdout, result.stderr


def test_beat_answers_liveness_ping_only_while_it_runs(tmp_path: Path) -> None:
    """The container healthcheck of beat: `celery inspect ping` to beat's own node.
    A beat that no longer runs its loop (here: stopped with SIGSTOP) must go silent."""
    node = f"celerybeat@probe-{os.getpid()}"
    env = {**os.environ, "CELERY_BEAT_SCHEDULE_FILE": str(tmp_path / "schedule"),
           "BEAT_MAX_LOOP_INTERVAL_SECONDS": "1", "BEAT_MAX_TICK_AGE_SECONDS": "5"}
    beat = _start(["beat", "--hostname", node], tmp_path / "beat.log", env)
    try:
        answered = _wait_for(lambda: "pong" in _ping(node, env).stdout, timeout=40)
        assert answered, (tmp_path / "beat.log").read_text()
        beat.send_signal(signal.SIGSTOP)
        silent = _ping(node, env)
        assert silent.returncode != 0 and "pong" not in silent.stdout, silent.stdout
        beat.send_signal(signal.SIGCONT)
        assert _wait_for(lambda: "pong" in _ping(node, env).stdout, timeout=30)
    finally:
        beat.send_signal(signal.SIGCONT)
        assert _stop(beat) == 0, (tmp_path / "beat.log").read_text()


def test_a_run_a_dead_worker_abandoned_is_claimed_again_once_its_lease_ran_out(db) -> None:
    """A redelivered task (the broker's visibility timeout passed) claims its run again; a run that
    is still within the lease (another worker is on it) or finished is never claimed twice."""
    from psycopg_pool import ConnectionPool

    from agent_app.db import CONNECTION_KWARGS, RunStore

    with ConnectionPool(os.environ["DATABASE_URL"], kwargs=CONNECTION_KWARGS, open=True) as pool:
        runs = RunStore(pool)
        run_id = runs.create("t-lease", "hello", "queued", "worker")
        first = runs.claim(run_id, lease_seconds=3600)
        assert first is not None and first.attempts == 1
        assert runs.claim(run_id, lease_seconds=3600) is None, "claimed twice within the lease"
        db.execute("UPDATE agent_runs SET claimed_at = now() - interval '20 seconds' WHERE id = %s", (run_id,))
        again = runs.claim(run_id, lease_seconds=10)
        assert again is not None and again.attempts == 2
        runs.finish(run_id, output="done")
        db.execute("UPDATE agent_runs SET claimed_at = now() - interval '1 hour' WHERE id = %s", (run_id,))
        assert runs.claim(run_id, lease_seconds=10) is None, "a finished run was claimed again"
        assert runs.get(run_id).to_json()["attempts"] == 2


def test_the_fake_model_can_be_slow() -> None:
    from agent_app.llm import FakeChatModel

    started = time.monotonic()
    FakeChatModel(delay_seconds=0.3)._complete([{"role": "user", "content": "hi"}])
    assert time.monotonic() - started >= 0.3
