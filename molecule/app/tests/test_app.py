"""The app stack as a Compose project: health, real requests, secrets,
idempotence, targeted recreation, bad input."""

import json
import os
import re
import shlex
import uuid

import pytest
from bedtest import run_role, wait_for

ROOT = "/opt/agent"
SECRETS = {
    "app_secret_key": "molecule-secret-key-7c1e9a4b",
    "app_postgres_password": "molecule-pg-password-3f8d2e61",
    "app_redis_password": "molecule-redis-password-b94a07d2",
}
APP_SERVICES = {"api-1", "api-2", "worker", "beat"}
DATA_SERVICES = {"postgres", "redis"}


def compose(host, args: str) -> str:
    return host.check_output(f"docker compose --project-directory {ROOT} {args}")


def containers(host) -> dict:
    """service -> container state, from `docker compose ps`."""
    out = compose(host, "ps --all --format json")
    rows = [json.loads(line) for line in out.splitlines() if line.strip()] if not out.startswith("[") \
        else json.loads(out)
    return {row["Service"]: row for row in rows}


def container_ids(host) -> dict:
    return {service: row["ID"] for service, row in containers(host).items()}


def http(host, method: str, url: str, body: dict | None = None) -> tuple[int, str]:
    """A real HTTP request from inside the VM (python3's urllib)."""
    script = (
        "import json, sys, urllib.request, urllib.error\n"
        f"req = urllib.request.Request({url!r}, method={method!r}, "
        f"data={json.dumps(body).encode() if body is not None else None!r}, "
        "headers={'Content-Type': 'application/json'})\n"
        "try:\n"
        "    r = urllib.request.urlopen(req, timeout=30); print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
    )
    out = host.check_output(f"python3 -c {shlex.quote(script)}")
    status, _, text = out.partition("\n")
    return int(status), text


def psql(host, sql: str) -> str:
    return compose(host, f"exec -T postgres psql -U agent -d agent -tAc {shlex.quote(sql)}").strip()


def test_every_service_running_and_healthy(host):
    state = containers(host)
    assert set(state) == APP_SERVICES | DATA_SERVICES
    for service, row in state.items():
        assert row["State"] == "running", service
        assert row["Health"] == "healthy", service


@pytest.mark.parametrize("port", [8001, 8002])
def test_ready_through_each_replica(host, port):
    status, body = http(host, "GET", f"http://127.0.0.1:{port}/ready")
    assert status == 200, body
    assert json.loads(body)["checks"] == {"postgres": "ok", "redis": "ok"}


def test_replicas_published_on_loopback_only(host):
    for service in ("api-1", "api-2"):
        publishers = containers(host)[service]["Publishers"]
        published = [p for p in publishers if p["PublishedPort"]]
        assert [p["URL"] for p in published] == ["127.0.0.1"], service


def test_invoke_creates_a_run_row(host):
    # letters only: digits in the input make the planner pick the calculator
    unique = "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex)
    text = f"count the words in request {unique}"
    status, body = http(host, "POST", "http://127.0.0.1:8001/v1/agent/invoke", {"input": text})
    assert status == 200, body
    result = json.loads(body)
    assert result["cached"] is False and "word_count" in result["output"]
    assert psql(host, f"select status, source from agent_runs where id = '{result['run_id']}'") == "succeeded|api"


def test_queued_run_is_executed_by_the_worker(host):
    status, body = http(host, "POST", "http://127.0.0.1:8002/v1/agent/runs", {"input": "what is 6 * 7"})
    assert status == 202, body
    run_id = json.loads(body)["run_id"]

    def finished():
        code, text = http(host, "GET", f"http://127.0.0.1:8001/v1/agent/runs/{run_id}")
        return code == 200 and json.loads(text)["status"] in ("succeeded", "failed") and json.loads(text)
    run = wait_for(finished, timeout=60, what="the worker to run the queued job")
    assert run["status"] == "succeeded"
    assert psql(host, f"select source from agent_runs where id = '{run_id}'") == "worker"


def test_stream_yields_tokens(host):
    status, body = http(host, "GET", "http://127.0.0.1:8001/v1/agent/stream?input=stream+me+some+tokens")
    assert status == 200
    tokens = re.findall(r"^data: (\{.*\})$", body, re.M)
    assert len(tokens) >= 3
    assert "event: done" in body


def test_secret_files_are_private(host):
    expected = {
        "app_secret_key": "agent", "database_password": "agent", "redis_password": "agent",
        "postgres_password": "999", "redis_conf": "999",
    }
    for name, owner in expected.items():
        f = host.file(f"{ROOT}/secrets/{name}")
        assert f.mode == 0o400, name
        assert (f.user if owner == "agent" else str(f.uid)) == owner, name
    assert host.file(f"{ROOT}/secrets").mode == 0o700


def test_release_recorded(host):
    release = json.loads(host.file(f"{ROOT}/release.json").content_string)
    assert release["release"]["image"] == "vmstack/agent-app:0.1.0"
    assert release["release"]["version"] == "0.1.0"
    image_id = host.check_output("docker image inspect -f '{{.Id}}' vmstack/agent-app:0.1.0")
    assert release["release"]["image_id"] == image_id
    assert release["release"]["git_sha"] == "0123abc"
    assert release["deployed_at"].endswith("Z")


def test_rerun_changes_and_recreates_nothing(host):
    before = container_ids(host)
    result = run_role(host.backend.get_hostname(), "app", {})
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"changed=0 ", result.stdout), result.stdout[-3000:]
    assert container_ids(host) == before


def test_setting_change_recreates_only_app_services(host):
    before = container_ids(host)
    result = run_role(host.backend.get_hostname(), "app", {"app_log_level": "DEBUG"})
    assert result.returncode == 0, result.stdout[-3000:]
    after = container_ids(host)
    assert {s for s in after if after[s] != before[s]} == APP_SERVICES
    assert "LOG_LEVEL=DEBUG" in host.file(f"{ROOT}/app.env").content_string


def test_image_change_recreates_app_services_and_keeps_previous_release(host):
    host.check_output("docker tag vmstack/agent-app:0.1.0 vmstack/agent-app:0.1.1")
    before = container_ids(host)
    result = run_role(host.backend.get_hostname(), "app",
                      {"app_image": "vmstack/agent-app:0.1.1", "app_log_level": "DEBUG"})
    assert result.returncode == 0, result.stdout[-3000:]
    after = container_ids(host)
    assert {s for s in after if after[s] != before[s]} == APP_SERVICES
    assert json.loads(host.file(f"{ROOT}/release.json").content_string)["release"]["version"] == "0.1.1"
    previous = json.loads(host.file(f"{ROOT}/release.previous.json").content_string)
    assert previous["release"]["image"] == "vmstack/agent-app:0.1.0"
    # back to the converged state for the tests after this one
    assert run_role(host.backend.get_hostname(), "app", {}).returncode == 0


def test_failed_migration_keeps_the_running_release(host):
    before = container_ids(host)
    env_before = host.file(f"{ROOT}/app.env").content_string
    result = run_role(host.backend.get_hostname(), "app", {"app_env": {"DATABASE_NAME": "no_such_db"}})
    assert result.returncode != 0
    assert "migrations failed" in result.stdout, result.stdout[-3000:]
    assert "previous release 0.1.0 is running again" in result.stdout, result.stdout[-3000:]
    assert container_ids(host) == before
    assert host.file(f"{ROOT}/app.env").content_string == env_before
    assert not host.run(f"ls {ROOT}/*~").stdout.strip(), "configuration backups left behind"
    status, _ = http(host, "GET", "http://127.0.0.1:8001/ready")
    assert status == 200


def test_managed_database_renders_no_postgres(host):
    """A second project against an "external" PostgreSQL (a container outside
    the project, reached over the VM's address) renders no postgres service."""
    gateway = host.check_output("ip -4 -o addr show docker0 | awk '{print $4}' | cut -d/ -f1")
    host.run("docker rm -f extdb")
    host.check_output("docker run -d --name extdb -p 15432:5432 -e POSTGRES_USER=ext -e POSTGRES_DB=ext "
                      "-e POSTGRES_PASSWORD=ext-secret-5c2 vmstack/postgres:15")
    try:
        wait_for(lambda: host.run("docker exec extdb pg_isready -h 127.0.0.1 -U ext").rc == 0,
                 timeout=60, what="the external database")
        result = run_role(host.backend.get_hostname(), "app", {
            "app_name": "agentx", "app_user": "agent", "app_api_ports": [8101, 8102], "app_worker_enabled": False,
            "app_database_url": f"postgresql://ext:ext-secret-5c2@{gateway}:15432/ext",
        })
        assert result.returncode == 0, result.stdout[-3000:]
        services = host.check_output("docker compose --project-directory /opt/agentx config --services").split()
        assert "postgres" not in services and "redis" in services
        status, body = http(host, "POST", "http://127.0.0.1:8101/v1/agent/invoke", {"input": "external db"})
        assert status == 200, body
        run_id = json.loads(body)["run_id"]
        rows = host.check_output(f"docker exec extdb psql -U ext -d ext -tAc "
                                 f"\"select count(*) from agent_runs where id = '{run_id}'\"")
        assert rows.strip() == "1"
    finally:
        host.run("docker compose --project-directory /opt/agentx down -v --remove-orphans")
        host.run("docker rm -f extdb && rm -rf /opt/agentx")


@pytest.mark.parametrize(("role_vars", "message"), [
    ({"app_api_replicas": 0}, "app_api_replicas >= 1"),
    ({"app_api_ports": [8001, 8001]}, "one distinct port"),
    ({"app_secret_key": ""}, "a required secret is missing"),
    ({"app_image_archives": {"vmstack/agent-app:0.1.0": "/nonexistent/agent-app.tar"}}, "/nonexistent/agent-app.tar"),
])
def test_bad_input_leaves_the_stack_alone(host, role_vars, message):
    before = container_ids(host)
    compose_before = host.file(f"{ROOT}/compose.yaml").content_string
    result = run_role(host.backend.get_hostname(), "app", role_vars)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-3000:]
    assert re.search(r"changed=0 ", result.stdout), result.stdout[-3000:]
    assert container_ids(host) == before
    assert host.file(f"{ROOT}/compose.yaml").content_string == compose_before


def playbook_log() -> str:
    """The Ansible log of this scenario (converge, idempotence, the role runs
    above), less testinfra's own `ansible-inventory --list` dumps: those
    print the test inventory, not anything the role did."""
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "ansible.log")
    with open(path, encoding="utf-8") as handle:
        records = re.split(r"^(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ p=)", handle.read(), flags=re.M)
    return "".join(r for r in records if not re.match(r"[^|]*\| \{\s*\"_meta\"", r))


# Last in the file, so the log it reads holds every role run of this module.
def test_secrets_appear_nowhere_else(host):
    inspect = host.check_output("docker inspect $(docker ps -aq)")
    files = host.check_output(f"cat {ROOT}/compose.yaml {ROOT}/app.env {ROOT}/release.json")
    ansible_log = playbook_log()
    assert "vmstack.deploy.app : Write the secret files" in ansible_log
    for name, value in SECRETS.items():
        assert value not in inspect, f"{name} in docker inspect"
        assert value not in files, f"{name} in the project files"
        assert value not in ansible_log, f"{name} in the Ansible log"
