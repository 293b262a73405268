"""Backups of the Supervisor runtime, proven by restoring them: the distribution's PostgreSQL
(pg_dump of the server's own major version, 15 on Debian 12 and 17 on Debian 13) and Redis, the
data directories under the app's root, into a restic repository on the VM. The drill restores
into a throw-away cluster made with the server's own initdb; the restore playbook brings back
what was destroyed, with the programs stopped and started by Supervisor."""

import base64
import json
import time

import restorecheck
from bedtest import PROJECT_DIR, run_playbook, wait_for

DATA = "/opt/agent/data"
SITE = "https://agent.vmstack.test"
REDIS = "(echo \"AUTH $(cat /opt/agent/secrets/redis_password)\"; cat) | redis-cli --no-auth-warning"


def piped(host, command: str, stdin: str) -> str:
    encoded = base64.b64encode(stdin.encode()).decode()
    return host.check_output(f"echo {encoded} | base64 -d | {command}")


def tools(host):
    def psql(sql: str, db: str = "agent") -> str:
        return piped(host, f"runuser -u postgres -- psql -X -d {db} -tA -v ON_ERROR_STOP=1", sql).strip()

    def redis(*commands: str) -> list[str]:
        return piped(host, REDIS, "".join(f"{c}\n" for c in commands)).split("\n")[1:]

    return psql, redis


def state(host) -> dict:
    psql, redis = tools(host)
    return restorecheck.state(psql, redis, host.check_output, DATA)


def load(host, batch: str, rows: int, files: int, keys: int) -> None:
    psql, redis = tools(host)
    psql(restorecheck.load_sql(batch, rows))
    host.check_output(restorecheck.load_files_script(DATA, batch, files, "agent:agent"))
    redis(*(f"SET test:{batch}:{i} {batch}-value-{i}" for i in range(keys)))


def test_a_run_and_its_drill_in_a_throwaway_cluster_of_the_servers_own_version(host):
    load(host, f"sv{int(time.time())}", 2000, 20, 200)
    host.check_output("systemctl start vmstack-backup-agent.service")
    run = json.loads(host.check_output("vmstack-backup snapshots agent --json"))[-1]
    assert set(run["parts"]) == {"postgres", "files"}
    version = host.check_output("runuser -u postgres -- psql -XtAc 'SHOW server_version_num'").strip()
    report = json.loads(host.check_output("vmstack-backup drill agent 2>/var/tmp/drill.log"))
    log = host.check_output("cat /var/tmp/drill.log")
    print(f"\n--- {host.backend.get_hostname()} (PostgreSQL {version}): {log.strip().splitlines()[-2]}")
    psql, _ = tools(host)
    assert report["run"] == run["run"]
    assert report["tables"]["public.agent_runs"] == int(psql("SELECT count(*) FROM agent_runs"))
    assert report["redis_keys"] >= 200
    # the throw-away cluster and Redis are gone, with their directory
    # (the bracket keeps pgrep from finding the shell that runs it)
    assert host.run("pgrep -f '[d]rill-.*/postgres/data'").rc == 1
    assert host.run("pgrep -f '[v]mstack-backup.sock'").rc == 1
    assert host.check_output("ls /var/tmp | grep -c '^drill-' || true").strip() == "0"
    metrics = host.check_output("cat /var/lib/prometheus/node-exporter/vmstack_backup_agent.prom")
    assert 'vmstack_backup_last_exit_status{app="agent"} 0' in metrics
    assert 'vmstack_backup_drill_last_exit_status{app="agent"} 0' in metrics


def test_the_restore_playbook_brings_back_what_was_destroyed(host):
    name = host.backend.get_hostname()
    psql, redis = tools(host)
    before = state(host)
    snapshots = json.loads(host.check_output("vmstack-backup snapshots agent --json"))
    run = snapshots[-1]
    # a bad day: the database dropped under the running app, the data directory emptied, Redis flushed
    psql("DROP DATABASE agent WITH (FORCE)", db="postgres")
    host.check_output(f"rm -rf {DATA}/*")
    redis("FLUSHALL")
    assert psql("SELECT count(*) FROM pg_database WHERE datname = 'agent'", db="postgres") == "0"
    assert host.check_output(f"ls -A {DATA}") == ""
    restore = {"backup_restore_confirm": "agent", "backup_restore_snapshot": run["run"]}
    # While a release holds the app's deploy lock, the restore refuses at once and changes nothing.
    host.check_output("echo '{\"by\": \"ci@release\", \"token\": \"r\"}' > /opt/agent/.deploy.lock")
    held = run_playbook(PROJECT_DIR / "playbooks" / "restore.yml", restore, args=["--limit", name])
    host.check_output("rm /opt/agent/.deploy.lock")
    assert held.returncode != 0
    assert "is being deployed by another run" in held.stdout and "ci@release" in held.stdout, held.stdout[-3000:]
    assert host.check_output(f"ls -A {DATA}") == "" and len(json.loads(
        host.check_output("vmstack-backup snapshots agent --json"))) == len(snapshots), "a safety run was taken"
    started = time.monotonic()
    result = run_playbook(PROJECT_DIR / "playbooks" / "restore.yml", restore, args=["--limit", name])
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:]
    assert host.run("test -e /opt/agent/.deploy.lock").rc != 0, "the restore kept the deploy lock"
    after = state(host)
    restorecheck.show(f"{name}: run {run['run']} restored by playbooks/restore.yml in {took:.1f} s", before, after)
    assert after == before
    status = host.check_output("supervisorctl status")
    assert status.count("RUNNING") == 5, status
    assert wait_for(lambda: host.run(f"curl -sk -o /dev/null -w '%{{http_code}}' {SITE}/ready").stdout == "200", 30), \
        "nginx does not serve the restored app"
    # the restored database is the app's: it writes a new run through nginx
    marker = f"after the restore of {run['run']}"
    code = host.check_output(f"curl -sk -o /dev/null -w '%{{http_code}}' -H 'Content-Type: application/json' "
                             f"-d '{{\"input\": \"{marker}\"}}' {SITE}/v1/agent/invoke")
    assert code == "200"
    assert psql(f"SELECT count(*) FROM agent_runs WHERE input = '{marker}'") == "1"


def test_a_managed_database_is_backed_up_drilled_and_restored_in_place(host):
    """A managed database under Supervisor: a database and user of their own, reached over TCP
    with a password as a provider's would be (on Debian 13: the release path is the same on both
    hosts). The backup role, given an app that names it by URL, dumps it with the distribution's
    programs as root (the password in root's pgpass file only), drills it into a throw-away
    cluster, and restores it in place: a load broken half-way leaves it as it was, a whole one
    brings back every table and takes away what came later, and the app's migrations run on it."""
    import pytest  # pylint: disable=import-outside-toplevel
    name = host.backend.get_hostname()
    if "bookworm" in name:
        pytest.skip("the managed database runs on sv-trixie (the suite's budget)")
    psql, redis = tools(host)
    root, password = "/opt/agentm", "ext-secret-5c2"
    app = {**json.loads(host.check_output("cat /etc/ansible/facts.d/vmstack_app.fact")),
           "name": "agentm", "root": root, "external_db": True, "writers": [], "data_dirs": []}
    settings = {"backup_app": app, "backup_repository": "/var/backups/restic/agentm", "backup_drill_on_calendar": ""}

    def ext(sql: str) -> str:
        return piped(host, f"PGPASSWORD={password} psql -X -h 127.0.0.1 -U ext -d ext -tA -v ON_ERROR_STOP=1", sql).strip()

    def ext_state() -> dict:
        return {"tables": dict(line.split(" ", 1) for line in ext(restorecheck.TABLE_STATE).splitlines()),
                "redis test keys": redis(restorecheck.REDIS_DIGEST)[0]}

    try:
        psql(f"CREATE ROLE ext LOGIN PASSWORD '{password}'", db="postgres")
        psql("CREATE DATABASE ext OWNER ext", db="postgres")
        # The app's settings for the managed database (what the app role writes for app_database_url),
        # and its migrations run on it by the current release.
        host.check_output(f"install -d -o agent -g agent {root}/run && install -d -m 0700 -o agent {root}/secrets"
                          f" && ln -sfn /opt/agent/current {root}/current")
        piped(host, f"install -m 0400 -o agent /dev/stdin {root}/secrets/database_url",
              f"postgresql://ext:{password}@127.0.0.1:5432/ext?sslmode=disable")
        host.check_output(f"grep -v '^DATABASE_' /opt/agent/app.env > {root}/app.env && echo "
                          f"DATABASE_URL_FILE={root}/secrets/database_url >> {root}/app.env")
        host.check_output(f"runuser -u agent -- env -i HOME={root}/run $(grep -v '^#' {root}/app.env | xargs)"
                          f" {root}/current/venv/bin/agent-app migrate")
        ext(restorecheck.load_sql("managed", 2000))
        redis(*(f"SET test:managed:{i} v{i}" for i in range(50)))
        result = run_playbook(PROJECT_DIR / "playbooks" / "backup_setup.yml", settings, args=["--limit", name])
        assert result.returncode == 0, result.stdout[-3000:]
        before = ext_state()

        run = host.run("vmstack-backup run agentm --kind manual")
        assert run.rc == 0, run.stderr
        assert "database ext streamed into the repository" in run.stderr
        assert host.file("/var/lib/vmstack-backup/agentm/pgpass").mode == 0o600
        assert password not in host.check_output("cat /etc/vmstack/backup/agentm.json")
        drill = host.run("vmstack-backup drill agentm")
        print(f"\n--- {name}, managed database: {drill.stderr.strip().splitlines()[-2]}")
        assert drill.rc == 0, drill.stderr
        assert json.loads(drill.stdout)["tables"]["public.agent_runs"] == 2000
        assert host.run("pgrep -f '[d]rill-.*/postgres/data'").rc == 1

        ext(restorecheck.load_sql("later", 300))
        ext("CREATE TABLE later_notes (id int PRIMARY KEY); INSERT INTO later_notes VALUES (1)")
        later = ext_state()
        # Broken on purpose: an event trigger of another role's refuses the load after the drop.
        psql("CREATE ROLE ops; CREATE SCHEMA ops AUTHORIZATION ops; CREATE FUNCTION ops.refuse() RETURNS "
             "event_trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'refused by the test'; END$$; "
             "ALTER FUNCTION ops.refuse() OWNER TO ops; CREATE EVENT TRIGGER refuse_indexes ON ddl_command_end "
             "WHEN TAG IN ('CREATE INDEX', 'ALTER TABLE') EXECUTE FUNCTION ops.refuse()", db="ext")
        broken = host.run("vmstack-backup restore agentm latest --yes-destroy-current-data agentm")
        psql("DROP EVENT TRIGGER refuse_indexes; DROP SCHEMA ops CASCADE; DROP ROLE ops", db="ext")
        assert broken.rc != 0 and "refused by the test" in broken.stderr, broken.stderr
        assert ext_state() == later, "a failed load in place changed the managed database"

        result = run_playbook(PROJECT_DIR / "playbooks" / "restore.yml",
                              {**settings, "backup_restore_confirm": "agentm"}, args=["--limit", name])
        assert result.returncode == 0, result.stdout[-3000:]
        after = ext_state()
        restorecheck.show(f"{name}: the managed database, restored in place by playbooks/restore.yml", before, after)
        assert after == before
        assert ext("SELECT count(*) FROM pg_tables WHERE tablename = 'later_notes'") == "0"
        assert ext("SELECT tableowner FROM pg_tables WHERE tablename = 'agent_runs'") == "ext"
    finally:
        host.run("systemctl disable --now vmstack-backup-agentm.timer vmstack-backup-check-agentm.timer;"
                 " rm -f /etc/systemd/system/vmstack-backup*-agentm.* /etc/vmstack/backup/agentm.*;"
                 " systemctl daemon-reload; rm -rf /var/lib/vmstack-backup/agentm /var/backups/restic/agentm"
                 f" {root} /var/lib/prometheus/node-exporter/vmstack_backup_agentm.prom")
        host.run("runuser -u postgres -- psql -Xc 'DROP DATABASE IF EXISTS ext WITH (FORCE)' -c 'DROP ROLE IF EXISTS ext'")
