"""The app stack as a Compose project: health, real requests, secrets,
idempotence, targeted recreation, bad input."""

import base64
import json
import os
import re
import shlex

import pytest
import bedtest
import restorecheck
from bedtest import run_aliases, run_cases, run_role, wait_for

ROOT = "/opt/agent"
SECRETS = {
    "managed database URL": "ext-secret-5c2",
    "app_secret_key": "molecule-secret-key-7c1e9a4b",
    "app_postgres_password": "molecule-pg-password-3f8d2e61",
    "app_redis_password": "molecule-redis-password-b94a07d2",
}
APP_SERVICES = {"api-1", "api-2", "worker", "beat"}
SECRET_FILES = "/opt/agent/secrets"
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


def test_release_recorded(host):
    release = json.loads(host.file(f"{ROOT}/release.json").content_string)
    assert release["release"]["image"] == "vmstack/agent-app:0.1.0"
    assert release["release"]["version"] == "0.1.0"
    image_id = host.check_output("docker image inspect -f '{{.Id}}' vmstack/agent-app:0.1.0")
    assert release["release"]["image_id"] == image_id
    assert release["release"]["git_sha"] == "0123abc"
    assert release["deployed_at"].endswith("Z")


def test_setting_change_recreates_only_app_services(host):
    before = container_ids(host)
    result = run_role(host.backend.get_hostname(), "app", {"app_log_level": "DEBUG"})
    assert result.returncode == 0, result.stdout[-3000:]
    after = container_ids(host)
    assert {s for s in after if after[s] != before[s]} == APP_SERVICES
    assert "LOG_LEVEL=DEBUG" in host.file(f"{ROOT}/app.env").content_string


def test_managed_database_shared_by_two_hosts(host):
    """Two projects against one "external" PostgreSQL (a container outside
    them, reached over the VM's address), deployed as two hosts of the group
    app (aliases of the VM): neither renders a postgres service, and Celery
    beat runs on the first host only, also when --limit deploys the second
    alone. Both Redis servers start without a password; that run of the
    second alone turns its password on while it runs.
    Two hosts of the database with different images are refused before any
    change. Then a release whose migrations fail on the shared database (made
    read-only, and named with other options by the second host) stops on
    both hosts: the first one, which migrates, says why and keeps its running
    release, settings and containers, and the second never starts the new
    release against the old schema."""
    gateway = host.check_output("ip -4 -o addr show docker0 | awk '{print $4}' | cut -d/ -f1")
    host.run("docker rm -f extdb")
    host.check_output("docker run -d --name extdb -p 15432:5432 -e POSTGRES_USER=ext -e POSTGRES_DB=ext "
                      "-e POSTGRES_PASSWORD=ext-secret-5c2 vmstack/postgres:15")
    vm = host.backend.get_hostname()
    common = {"app_user": "agent", "app_api_replicas": 1, "app_worker_enabled": False, "app_data_volumes": [],
              "app_redis_password": "", "app_database_url": f"postgresql://ext:ext-secret-5c2@{gateway}:15432/ext"}
    # (each app on the host needs its own loopback ports for PostgreSQL and Redis, as for its replicas)
    projects = {"x": {**common, "app_name": "agentx", "app_api_ports": [8101], "app_worker_metrics_port": 9541,
                      "app_redis_host_port": 6381, "app_postgres_host_port": 5441},
                "y": {**common, "app_name": "agenty", "app_api_ports": [8201], "app_worker_metrics_port": 9542,
                      "app_redis_host_port": 6382, "app_postgres_host_port": 5442}}

    def deploy(only=None, **changes):
        result, outputs = run_aliases(vm, {k: {**v, **changes.get(k, {})} for k, v in projects.items()}, role="app",
                                      groups=["app"], only=only)
        return result, {k: " ".join(out.split()) for k, out in outputs.items()}

    def beats():
        names = host.check_output("docker ps --format '{{.Names}}'").split()
        return sorted(n for n in names if n in ("agentx-beat", "agenty-beat"))

    def extdb(sql: str) -> str:
        return host.check_output(f"docker exec extdb psql -U ext -d ext -tAc {shlex.quote(sql)}").strip()

    try:
        wait_for(lambda: host.run("docker exec extdb pg_isready -h 127.0.0.1 -U ext").rc == 0,
                 timeout=60, what="the external database")
        # Both: x, the first host of the group app, starts beat: one beat in the inventory.
        result, _ = deploy()
        assert result.returncode == 0, result.stdout[-3000:]
        assert beats() == ["agentx-beat"]
        assert host.check_output("docker exec agenty-redis redis-cli ping") == "PONG"  # no password yet
        for project in ("agentx", "agenty"):
            services = host.check_output(f"docker compose --project-directory /opt/{project} config --services").split()
            assert "postgres" not in services and "redis" in services, project
        status, body = http(host, "POST", "http://127.0.0.1:8101/v1/agent/invoke", {"input": "external db"})
        assert status == 200, body
        run_id = json.loads(body)["run_id"]
        assert extdb(f"select count(*) from agent_runs where id = '{run_id}'") == "1"
        # The URL (it holds the password) is a 0400 file, in no config and no container's environment.
        assert host.file("/opt/agentx/secrets/database_url").mode == 0o400
        inspect = host.check_output("docker inspect $(docker ps -q --filter label=com.docker.compose.project=agentx)")
        assert "ext-secret-5c2" not in inspect
        assert "ext-secret-5c2" not in host.check_output("cat /opt/agentx/compose.yaml /opt/agentx/app.env")
        # y alone (--limit), turning its Redis password on while the project runs: beat stays with x,
        # the first host of the group app, which is not in the run.
        result, _ = deploy(only=["y"], y={"app_redis_password": "turned-on-7e3f"})
        assert result.returncode == 0, result.stdout[-3000:]
        assert beats() == ["agentx-beat"], "y, deployed alone under --limit, started a beat"
        assert "NOAUTH" in host.run("docker exec agenty-redis redis-cli ping").stdout
        assert host.check_output("docker exec agenty-redis redis-cli -a turned-on-7e3f --no-auth-warning ping") == "PONG"
        for port in (8101, 8201):
            status, body = http(host, "GET", f"http://127.0.0.1:{port}/ready")
            assert status == 200, body

        projects["y"]["app_redis_password"] = "turned-on-7e3f"
        # (each container's start time too: a restart keeps its ID)
        state = lambda p: (host.check_output("docker inspect -f '{{.Id}} {{.State.StartedAt}}' "  # noqa: E731
                                             f"$(docker ps -q --filter label=com.docker.compose.project={p}) | sort"),
                           host.file(f"/opt/{p}/release.json").content_string, host.file(f"/opt/{p}/app.env").content_string)
        before = {p: state(p) for p in ("agentx", "agenty")}
        # Hosts of one database with different images: refused before anything changes, naming the
        # database by its servers and name only.
        result, out = deploy(y={"app_image": "vmstack/agent-app:0.2.0", "app_log_level": "DEBUG"})
        assert result.returncode != 0
        assert (f"but other hosts that share its database {gateway}:15432/ext deploy vmstack/agent-app:0.2.0 ({vm}-y)"
                in out["x"]), out["x"][-3000:]
        assert "ext-secret-5c2" not in result.stdout
        assert {p: state(p) for p in ("agentx", "agenty")} == before

        # A release whose migrations fail on the shared database, which y names in other words
        # (options in its URL): still one database, migrated by x alone.
        extdb("alter database ext set default_transaction_read_only = on")
        result, out = deploy(x={"app_log_level": "DEBUG"},
                             y={"app_log_level": "DEBUG", "app_database_url": common["app_database_url"] + "?sslmode=disable"})
        assert result.returncode != 0
        assert "read-only transaction" in out["x"] and "Rolled back: the previous release" in out["x"], out["x"][-3000:]
        # (had it migrated itself, it would say "migrations failed (exit 1)" as the first host does)
        assert f"migrations failed on {vm}-x (the shared database); this host keeps its release" in out["y"], \
            out["y"][-3000:]
        # Both keep their containers (none restarted: y's URL file is put back, but its running API never
        # mounted the new one), their release record and their settings, and no backup is left behind.
        assert {p: state(p) for p in ("agentx", "agenty")} == before, "a host started the release whose migrations failed"
        assert "LOG_LEVEL=DEBUG" not in before["agenty"][2]
        assert not host.run("ls /opt/agent[xy]/*~ /opt/agent[xy]/secrets/*~").stdout.strip(), "backups left behind"
        for port in (8101, 8201):
            status, body = http(host, "GET", f"http://127.0.0.1:{port}/ready")
            assert status == 200, body
    finally:
        host.run("docker rm -f extdb")
        for project in ("agentx", "agenty"):
            host.run(f"systemctl disable --now vmstack-autoheal-{project};"
                     f" rm -f /etc/systemd/system/vmstack-autoheal-{project}.service && systemctl daemon-reload;"
                     f" docker compose --project-directory /opt/{project} down -v --remove-orphans; rm -rf /opt/{project}")


def test_managed_database_backup_round_trip(host, tmp_path):
    """A managed database (a PostgreSQL outside the stack, reached over the VM's address) backed up
    by the backup role with pg_dump from the stack's PostgreSQL image, its password in a pgpass
    file and in no argv, no settings file and no container left behind; drilled into a throw-away
    server; then, after later writes and a table of its own, restored in place by
    playbooks/restore.yml: every table as backed up, the later table gone, the app ready and
    writing. A managed database cannot be dropped and created again, so the load replaces what
    the app's user owns in one transaction."""
    gateway = host.check_output("ip -4 -o addr show docker0 | awk '{print $4}' | cut -d/ -f1")
    vm = host.backend.get_hostname()
    host.run("docker rm -f extdb")
    host.check_output("docker run -d --name extdb -p 15432:5432 -e POSTGRES_USER=ext -e POSTGRES_DB=ext "
                      "-e POSTGRES_PASSWORD=ext-secret-5c2 vmstack/postgres:15")
    settings = {"app_name": "agentx", "app_user": "agent", "app_api_replicas": 1, "app_api_ports": [8101],
                "app_worker_enabled": False, "app_data_volumes": [], "app_redis_password": "",
                "app_redis_host_port": 6381, "app_postgres_host_port": 5441,
                "app_database_url": f"postgresql://ext:ext-secret-5c2@{gateway}:15432/ext?application_name=agentx",
                "backup_repository": "/var/backups/restic/agentx", "backup_password": "molecule-backup-password-9a4e7c21",
                "backup_drill_on_calendar": ""}
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([{"name": "The app on a managed database, and its backups", "hosts": vm,
                                     "become": True, "roles": [{"role": "vmstack.deploy.app"},
                                                               {"role": "vmstack.deploy.backup"}]}]))

    def extdb(sql: str) -> str:
        return host.check_output(f"docker exec extdb psql -U ext -d ext -tAc {shlex.quote(sql)}").strip()

    def redis(*commands: str) -> list[str]:  # (over redis-cli's stdin, as the backup script sends them)
        script = base64.b64encode("".join(f"{c}\n" for c in commands).encode()).decode()
        return host.check_output(f"echo {script} | base64 -d | docker exec -i agentx-redis redis-cli").splitlines()

    def state() -> dict:
        return {"tables": dict(line.split(" ", 1) for line in extdb(restorecheck.TABLE_STATE).splitlines()),
                "redis test keys": redis(restorecheck.REDIS_DIGEST)[0]}

    try:
        wait_for(lambda: host.run("docker exec extdb pg_isready -h 127.0.0.1 -U ext").rc == 0,
                 timeout=60, what="the external database")
        result = bedtest.run_playbook(playbook, settings)
        assert result.returncode == 0, result.stdout[-3000:]
        status, body = http(host, "POST", "http://127.0.0.1:8101/v1/agent/invoke", {"input": "managed backup"})
        assert status == 200, body
        extdb(restorecheck.load_sql("managed", 3000))
        redis(*(f"SET test:{i} v{i}" for i in range(40)))
        before = state()

        run = host.run("vmstack-backup run agentx --kind manual")
        assert run.rc == 0, run.stderr
        assert "database ext streamed into the repository" in run.stderr
        assert {"postgres", "files"} <= set(json.loads(host.check_output("vmstack-backup snapshots agentx --json"))[-1]["parts"])
        # The password: in root's pgpass file (0600), in no settings, and no client container stays.
        assert host.file("/var/lib/vmstack-backup/agentx/pgpass").mode == 0o600
        assert "ext-secret-5c2" not in host.check_output("cat /etc/vmstack/backup/agentx.json")
        assert not host.check_output("docker ps -aq --filter label=vmstack.backup=true")
        drill = host.run("vmstack-backup drill agentx")
        print(f"\n--- drill: {drill.stderr.strip().splitlines()[-2] if drill.stderr.strip() else drill.stdout}")
        assert drill.rc == 0, drill.stderr
        report = json.loads(drill.stdout)
        assert report["tables"]["public.agent_runs"] >= 3001 and report["redis_keys"] >= 40
        assert not host.check_output("docker ps -aq --filter label=vmstack.drill=true")

        # Later writes, and a table of the app user's own that the run does not have.
        extdb(restorecheck.load_sql("later", 500))
        extdb("CREATE TABLE later_notes (id int PRIMARY KEY, note text); INSERT INTO later_notes VALUES (1, 'later')")
        redis("SET test:later x")
        later = state()
        assert later != before
        run_id = json.loads(host.check_output("vmstack-backup snapshots agentx --json"))[-1]["run"]

        # Broken on purpose: the load fails after it dropped every table and loaded the data (an event
        # trigger of another role's refuses the indexes). Its one transaction leaves the database as it was.
        extdb("CREATE ROLE ops; CREATE SCHEMA ops AUTHORIZATION ops; "
              "CREATE FUNCTION ops.refuse() RETURNS event_trigger LANGUAGE plpgsql AS "
              "$$BEGIN RAISE EXCEPTION 'refused by the test'; END$$; ALTER FUNCTION ops.refuse() OWNER TO ops; "
              "CREATE EVENT TRIGGER refuse_indexes ON ddl_command_end WHEN TAG IN ('CREATE INDEX', 'ALTER TABLE') "
              "EXECUTE FUNCTION ops.refuse()")
        broken = host.run(f"vmstack-backup restore agentx {run_id} --yes-destroy-current-data agentx")
        extdb("DROP EVENT TRIGGER refuse_indexes; DROP SCHEMA ops CASCADE; DROP ROLE ops")
        assert broken.rc != 0 and "refused by the test" in broken.stderr, broken.stderr
        assert "the restore stopped half-way" in broken.stderr
        assert state() == later, "a failed load in place changed the managed database"
        assert extdb("SELECT count(*) FROM pg_tables WHERE tablename = 'later_notes'") == "1"

        # (the VM as a host of the group app, which the playbook restores)
        restored, _ = run_aliases(vm, {"x": {**settings, "backup_restore_confirm": "agentx"}}, groups=["app"],
                                  playbook=bedtest.PROJECT_DIR / "playbooks" / "restore.yml")
        assert restored.returncode == 0, restored.stdout[-3000:]
        after = state()
        restorecheck.show("managed database, restored in place", before, after)
        assert after == before
        assert extdb("SELECT count(*) FROM pg_tables WHERE tablename = 'later_notes'") == "0"
        status, body = http(host, "GET", "http://127.0.0.1:8101/ready")
        assert status == 200, body
        status, body = http(host, "POST", "http://127.0.0.1:8101/v1/agent/invoke", {"input": "after the restore"})
        assert status == 200, body
        assert extdb("SELECT count(*) FROM agent_runs WHERE input = 'after the restore'") == "1"
    finally:
        host.run("docker rm -f extdb")
        host.run("systemctl disable --now vmstack-backup-agentx.timer vmstack-backup-check-agentx.timer;"
                 " rm -f /etc/systemd/system/vmstack-backup*-agentx.* /etc/vmstack/backup/agentx.*;"
                 " rm -rf /var/lib/vmstack-backup/agentx /var/backups/restic/agentx;"
                 " systemctl disable --now vmstack-autoheal-agentx;"
                 " rm -f /etc/systemd/system/vmstack-autoheal-agentx.service && systemctl daemon-reload;"
                 " docker compose --project-directory /opt/agentx down -v --remove-orphans; rm -rf /opt/agentx")


ROTATED = {"app_secret_key": "rotated-but-refused-9d8c"}


BAD_INPUT = [
    ({"app_api_replicas": 0}, "app_api_replicas >= 1"),
    ({"app_api_ports": [8001, 8001]}, "one distinct port"),
    ({"app_secret_key": ""}, "a required secret is missing"),
    ({"app_image_archives": {"vmstack/agent-app:0.1.0": "/nonexistent/stack.tar"}}, "/nonexistent/stack.tar"),
    ({"app_image": "vmstack/agent-app:latest"}, "vmstack/agent-app:latest is not pinned"),
    ({"app_image": "vmstack/agent-app"}, "vmstack/agent-app is not pinned"),
    ({"app_extra_secrets": {"Bad-Name": "x"}}, "app_extra_secrets names must be"),
    ({"app_extra_services": {"web": {"image": "vmstack/busybox:1", "port": 80, "host_port": 8001}}},
     "no API replica or other service uses"),
    # (the message does not show the value: it holds a password)
    ({"app_database_url": "ext:url-secret-4d1@db.example:5432/ext"}, "app_database_url is not a PostgreSQL URL"),
    # Passes every assert, fails `docker compose config`: refused before any live file changes,
    # even with a new secret in the same run.
    ({"app_resources": {"api": {"memory": "lots", "cpus": "1.0"}, "worker": {"memory": "320m", "cpus": "1.0"},
                        "beat": {"memory": "192m", "cpus": "0.25"}, "postgres": {"memory": "384m", "cpus": "1.0"},
                        "redis": {"memory": "128m", "cpus": "0.5"}}, **ROTATED}, "failed to validate"),
]


@pytest.fixture(scope="module")
def bad_input_runs(host):
    """Every bad-input case in one run (each an alias of the host with its own
    vars), the stack's state taken before and after them all."""
    files = f"{ROOT}/compose.yaml {ROOT}/app.env {SECRET_FILES}/*"
    state = lambda: (container_ids(host), host.check_output(f"sha256sum {files}"))  # noqa: E731
    before = state()
    outputs = run_cases(host.backend.get_hostname(),
                        {str(case): role_vars for case, (role_vars, _) in enumerate(BAD_INPUT)}, role="app")
    return before, state(), outputs


@pytest.mark.parametrize("case", range(len(BAD_INPUT)), ids=[m.split()[0] for _, m in BAD_INPUT])
def test_bad_input_leaves_the_stack_alone(host, bad_input_runs, case):
    before, after, outputs = bad_input_runs
    output, message = outputs[str(case)], BAD_INPUT[case][1]
    alias = re.escape(f"{host.backend.get_hostname()}-{case}")
    assert re.search(rf"^(fatal|failed): \[{alias}\]", output, re.M), output[-3000:]
    assert message in " ".join(output.split()), output[-3000:]
    assert re.search(rf"^{alias}\s*:.*changed=0 .*failed=1", output, re.M), output[-3000:]
    assert after == before, "a refused run changed a container or a file"
    assert "url-secret-4d1" not in output


# Last in the file, so the log it reads holds every role run of this module.
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
    # (late in the module: the tests after it do not need release 0.1.0 back)



def test_postgres_major_upgrade_through_dump_and_restore_keeps_every_row(host):
    """15 to 17 (Debian 12's and 13's packages): refused without app_postgres_upgrade, then
    upgraded with it; every table identical by a checksum of its own, the old data kept."""
    name = host.backend.get_hostname()
    psql(host, restorecheck.load_sql("upgrade", 3000))
    before = psql(host, restorecheck.TABLE_STATE)
    assert "agent_runs 30" in before  # (3000 and the runs of the tests before)
    image_dir = os.environ.get("VMSTACK_IMAGE_DIR") or str(bedtest.PROJECT_DIR / "build" / "images")
    upgrade = {"app_image": "vmstack/agent-app:0.1.1", "app_log_level": "DEBUG",
               "app_postgres_image": "vmstack/postgres:17",
               "app_image_archives": {"vmstack/postgres:17": f"{image_dir}/postgres17.tar"}}
    host.check_output("docker tag vmstack/agent-app:0.1.0 vmstack/agent-app:0.1.1")  # (as the test before)
    run_role(name, "app", {k: upgrade[k] for k in ("app_image", "app_log_level")})
    project = f"sha256sum {ROOT}/compose.yaml {ROOT}/app.env {SECRET_FILES}/*"
    stack_before = (container_ids(host), host.check_output(project))

    refused = run_role(name, "app", upgrade)
    assert refused.returncode != 0
    assert "is PostgreSQL 15 and app_postgres_image (vmstack/postgres:17) is PostgreSQL 17" in " ".join(refused.stdout.split())
    # (the new image was loaded: that is all)
    assert (container_ids(host), host.check_output(project)) == stack_before
    assert psql(host, "SHOW server_version_num").startswith("15")

    # An extension PostgreSQL 17 no longer has makes the load fail half-way: the old data goes
    # back, the previous release runs on 15 again, every row where it was.
    psql(host, "CREATE EXTENSION old_snapshot")
    with_extension = psql(host, restorecheck.TABLE_STATE)
    failed = run_role(name, "app", {**upgrade, "app_postgres_upgrade": True})
    assert failed.returncode != 0
    message = " ".join(failed.stdout.split())
    stop = re.search(r"app: release \S+ of agent was not deployed: .*?put back[^.]*\.[^.]*\.", message)
    assert stop and 'extension "old_snapshot" is not available' in stop[0], failed.stdout[-3000:]
    assert psql(host, "SHOW server_version_num").startswith("15")
    assert psql(host, restorecheck.TABLE_STATE) == with_extension
    for port in (8001, 8002):
        assert wait_for(lambda: http(host, "GET", f"http://127.0.0.1:{port}/ready")[0] == 200, 60), port
    psql(host, "DROP EXTENSION old_snapshot")

    result = run_role(name, "app", {**upgrade, "app_postgres_upgrade": True})
    assert result.returncode == 0, result.stdout[-3000:]
    report = re.search(r"PostgreSQL 15 upgraded to 17 in [0-9.]+ s[^\"]*", " ".join(result.stdout.split()))
    print(f"\n--- {report[0] if report else result.stdout[-1500:]}")
    assert report and "every table identical" in report[0]
    assert psql(host, "SHOW server_version_num").startswith("17")
    after = psql(host, restorecheck.TABLE_STATE)
    for line in before.splitlines():
        print(f"  {line:60} {'identical' if line in after.splitlines() else 'DIFFERS'}")
    assert after == before
    kept = [record_volume := json.loads(host.file(f"{ROOT}/postgres-upgrade.json").content_string)["old_data_volume"]]
    assert record_volume in host.check_output("docker volume ls -q --filter name=agent_postgres-data-15-").split()
    assert host.check_output(f"cat $(docker volume inspect -f '{{{{.Mountpoint}}}}' {kept[0]})/PG_VERSION") == "15"
    record = json.loads(host.file(f"{ROOT}/postgres-upgrade.json").content_string)
    assert (record["from"], record["to"], record["old_data_volume"]) == (15, 17, kept[0])
    for port in (8001, 8002):
        status, body = http(host, "GET", f"http://127.0.0.1:{port}/ready")
        assert status == 200, body
    status, body = http(host, "POST", "http://127.0.0.1:8001/v1/agent/invoke", {"input": "after the upgrade"})
    assert status == 200, body
    assert psql(host, "SELECT count(*) FROM agent_runs WHERE input = 'after the upgrade'") == "1"

    again = run_role(name, "app", {**upgrade, "app_postgres_upgrade": True})
    assert again.returncode == 0, again.stdout[-3000:]
    assert bedtest.recap(again)[name]["changed"] == 0, again.stdout[-3000:]
    assert len(host.check_output("docker volume ls -q --filter name=agent_postgres-data-15-").split()) == 2  # (both attempts')

def test_secrets_appear_nowhere_else(host):
    inspect = host.check_output("docker inspect $(docker ps -aq)")
    files = host.check_output(f"cat {ROOT}/compose.yaml {ROOT}/app.env {ROOT}/release.json")
    ansible_log = bedtest.ansible_log()
    assert "vmstack.deploy.app : Write the secret files" in ansible_log
    for name, value in SECRETS.items():
        assert value not in inspect, f"{name} in docker inspect"
        assert value not in files, f"{name} in the project files"
        assert value not in ansible_log, f"{name} in the Ansible log"
