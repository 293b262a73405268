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
    run = json.loads(host.check_output("vmstack-backup snapshots agent --json"))[-1]
    # a bad day: the database dropped under the running app, the data directory emptied, Redis flushed
    psql("DROP DATABASE agent WITH (FORCE)", db="postgres")
    host.check_output(f"rm -rf {DATA}/*")
    redis("FLUSHALL")
    assert psql("SELECT count(*) FROM pg_database WHERE datname = 'agent'", db="postgres") == "0"
    assert host.check_output(f"ls -A {DATA}") == ""
    started = time.monotonic()
    result = run_playbook(PROJECT_DIR / "playbooks" / "restore.yml",
                          {"backup_restore_confirm": "agent", "backup_restore_snapshot": run["run"]},
                          args=["--limit", name])
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:]
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
