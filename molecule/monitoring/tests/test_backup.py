"""Backups proven by restoring them: mon-app's stack backed up over SFTP to mon-prom with restic.

Every test drives the real pieces: the backup unit systemd runs, restic, pg_dump and
psql in the PostgreSQL container, Redis's BGSAVE, the restore playbook over Ansible,
Prometheus reading the metrics and Alertmanager delivering the failure.
"""

from __future__ import annotations

import json
import re
import time

import restorecheck
from bedtest import PROJECT_DIR, recap, run_aliases, run_playbook, run_role
from scenario import APP, delivered, query, sh, wait_for

testinfra_hosts = ["ansible://mon-app"]

UNIT = "vmstack-backup-agent.service"
RESTORE = PROJECT_DIR / "playbooks" / "restore.yml"
REDIS = "(echo \"AUTH $(cat /opt/agent/secrets/redis_password)\"; cat) | docker exec -i agent-redis redis-cli --no-auth-warning"
VOLUME = "$(docker volume inspect -f '{{.Mountpoint}}' agent_data)"


def psql(sql: str, db: str = "agent") -> str:
    return sh(APP, f"docker exec -i agent-postgres psql -X -U agent -d {db} -tA -v ON_ERROR_STOP=1", stdin=sql).strip()


def redis(*commands: str) -> list[str]:
    return sh(APP, REDIS, stdin="".join(f"{c}\n" for c in commands)).split("\n")[1:-1]


def state() -> dict:
    return restorecheck.state(psql, redis, lambda script: sh(APP, script), VOLUME)


def load(batch: str, rows: int, files: int, keys: int) -> None:
    psql(restorecheck.load_sql(batch, rows))
    sh(APP, restorecheck.load_files_script(VOLUME, batch, files, "10001:10001"))
    redis(*(f"SET test:{batch}:{i} {batch}-value-{i}" for i in range(keys)))


def backup_now() -> dict:
    """One run through the unit the timer starts; the run it made."""
    sh(APP, f"systemctl start {UNIT}", timeout=600)
    return runs()[-1]


def runs() -> list[dict]:
    return json.loads(sh(APP, "vmstack-backup snapshots agent --json"))


def restore(spec: str) -> str:
    result = run_playbook(RESTORE, {"backup_restore_confirm": "agent", "backup_restore_snapshot": spec},
                          args=["--limit", APP])
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


def destroy() -> None:
    """What a bad day leaves: no database, no data volume, no Redis data."""
    sh(APP, "cd /opt/agent && docker compose stop api-1 api-2 worker beat && docker compose rm -f api-1 api-2 worker beat"
            " && docker volume rm agent_data")
    psql("DROP DATABASE agent WITH (FORCE)", db="postgres")
    redis("FLUSHALL")


def test_the_repository_is_off_the_host_encrypted_and_holds_no_plain_secret():
    listing = sh("mon-prom", "ls /srv/restic/agent && stat -c '%U' /srv/restic/agent/config")
    assert {"config", "data", "index", "keys", "snapshots"} <= set(listing.split()), listing
    assert listing.split()[-1] == "backup-agent"
    # encrypted: the repository's files hold none of the app's table names
    assert sh("mon-prom", "grep -rl agent_runs /srv/restic/agent || true").strip() == ""
    modes = sh(APP, "stat -c '%a %U %n' /etc/vmstack/backup/agent.env /etc/vmstack/backup/agent.password"
                    " /etc/vmstack/backup/agent.json")
    assert all(line.startswith("600 root") for line in modes.splitlines()), modes
    assert "molecule-backup-password" not in sh(APP, "cat /etc/vmstack/backup/agent.json /etc/systemd/system/vmstack-backup*")


def test_a_round_trip_restores_every_row_file_and_key_after_everything_was_destroyed():
    """Thousands of runs and a data directory, backed up, destroyed, restored by the playbook: identical."""
    assert wait_for(lambda: sh(APP, "curl -sk -o /dev/null -w '%{http_code}' https://agent.vmstack.test/ready",
                               check=False) == "200", 120)
    codes = sh(APP, "for i in $(seq 1 10); do curl -sk -o /dev/null -w '%{http_code}\\n' -H 'Content-Type: application/json'"
                    " -d \"{\\\"input\\\": \\\"round trip $i\\\"}\" https://agent.vmstack.test/v1/agent/invoke; done").split()
    assert codes == ["200"] * 10
    load(f"first{int(time.time())}", 5000, 60, 500)
    before = state()
    assert int(before["tables"]["agent_runs"].split()[0]) >= 5010
    first = backup_now()
    safety_runs = [r["kind"] for r in runs()].count("safety")
    destroy()
    assert psql("SELECT count(*) FROM pg_database WHERE datname = 'agent'", db="postgres") == "0"
    started = time.monotonic()
    out = restore(first["run"])
    took = time.monotonic() - started
    after = state()
    restorecheck.show(f"round trip: run {first['run']} restored by playbooks/restore.yml in {took:.1f} s "
         f"(a safety run first, then the restore, gated on /ready)", before, after)
    assert after == before
    assert "Every replica answers /ready" in out
    # nginx may still hold the replicas it saw fail during the restore as down for its fail_timeout
    through_nginx = wait_for(lambda: sh(APP, "curl -sk -o /dev/null -w '%{http_code}' https://agent.vmstack.test/ready",
                                        check=False) == "200", 30, 1)
    assert through_nginx, "nginx does not serve the restored stack"
    assert [r["kind"] for r in runs()].count("safety") == safety_runs + 1


def test_point_in_time_an_earlier_run_drops_later_data_and_a_later_time_brings_it_back():
    earlier = state()
    first = [r for r in runs() if r["kind"] == "scheduled"][-1]
    batch = f"second{int(time.time())}"
    load(batch, 1000, 20, 100)
    later = state()
    assert later != earlier
    second = backup_now()
    # by snapshot id (a prefix of the first run's database snapshot)
    restore(first["parts"]["postgres"][:10])
    got = state()
    restorecheck.show(f"point in time: run {first['run']} restored by snapshot id after run {second['run']}", earlier, got)
    assert got == earlier
    assert psql(f"SELECT count(*) FROM agent_runs WHERE thread_id LIKE '{batch}-%'") == "0"
    assert sh(APP, f"test -e {VOLUME}/{batch} && echo present || echo gone").strip() == "gone"
    # by time: the last run at or before the second run's time
    restore(second["time"])
    assert state() == later


def test_the_drill_restores_the_latest_run_aside_and_finds_it_identical():
    before = sh(APP, "docker ps -q | sort")
    sh(APP, "systemctl start vmstack-backup-drill-agent.service", timeout=600)
    log = sh(APP, "journalctl -u vmstack-backup-drill-agent.service -o cat --since -5min | grep 'drill of run' | tail -1")
    print(f"\n{log.strip()}")
    assert re.search(r"identical \(\d{4,} rows in \d+ tables, \d+ Redis keys\)", log)
    assert sh(APP, "docker ps -q | sort") == before, "a throw-away container was left behind"
    metrics = sh(APP, "cat /var/lib/prometheus/node-exporter/vmstack_backup_agent.prom")
    assert 'vmstack_backup_drill_last_exit_status{app="agent"} 0' in metrics
    # By hand, from a root shell with the harden role's umask: the throw-away Redis (the volume's
    # owner, not root) still reads the dump (it once stopped at "dir /data: Permission denied").
    # And a key whose expiry lapsed between the run and the drill is no difference (it once was).
    # (an expiry the run's BGSAVE comes well within, and the drill after it)
    set_at = time.monotonic()
    redis("SET test-expiring:1 soon EX 15")
    sh(APP, "vmstack-backup run agent --kind manual --wait 600", timeout=600)
    assert time.monotonic() - set_at < 14, "the run took longer than the key's expiry: make it longer"
    time.sleep(max(0.0, set_at + 16 - time.monotonic()))
    by_hand = sh(APP, "umask 027 && vmstack-backup drill agent 2>&1", timeout=600)
    assert "identical" in by_hand and "1 Redis keys of the run had an expiry that has lapsed" in by_hand, by_hand


def test_the_timer_fires_and_prometheus_reads_the_metrics():
    since = time.time()
    last = lambda: sh(APP, f"systemctl show -P ExecMainStartTimestampMonotonic {UNIT}").strip()  # noqa: E731
    previous = last()
    fast = run_role(APP, "backup", {"backup_on_calendar": "*:*:0/10", "backup_randomized_delay": "0"})
    assert fast.returncode == 0, fast.stdout[-2000:]
    try:
        fired = wait_for(lambda: last() != previous and sh(APP, f"systemctl show -P ActiveState {UNIT}").strip()
                         == "inactive", 90, 2)
        assert fired, "the timer did not start the backup"
        assert sh(APP, f"systemctl show -P Result {UNIT}").strip() == "success"
    finally:
        back = run_role(APP, "backup", {})
        assert back.returncode == 0, back.stdout[-2000:]
    expr = 'vmstack_backup_last_success_timestamp_seconds{app="agent",host="mon-app"}'
    seen = wait_for(lambda: (lambda r: r if r and float(r[0]["value"][1]) >= since else None)(query(expr)), 60)
    assert seen, query(expr)
    print(f"\nthe timer's run was scraped: {expr} = {float(seen[0]['value'][1]):.0f} (>= {since:.0f})")
    assert sh(APP, "systemctl show -P NextElapseUSecRealtime vmstack-backup-agent.timer").strip() != "", \
        "the timer is not scheduled again after its calendar changed back"
    assert "OnCalendar=*-*-* 03:00:00" in sh(APP, "cat /etc/systemd/system/vmstack-backup-agent.timer")


def test_overlapping_runs_are_refused_by_the_lock():
    sh(APP, f"systemctl start --no-block {UNIT}")
    assert wait_for(lambda: subprocess_rc(APP, "flock -n /run/lock/vmstack-backup-agent.lock true")[0] == 1, 30, 0.2)
    second = subprocess_rc(APP, "vmstack-backup run agent")
    assert second[0] == 75, second
    assert "another backup operation of 'agent' holds" in second[1]
    wait_for(lambda: sh(APP, f"systemctl show -P ActiveState {UNIT}").strip() == "inactive", 300)
    assert sh(APP, f"systemctl show -P Result {UNIT}").strip() == "success"


def subprocess_rc(vm: str, command: str) -> tuple[int, str]:
    out = sh(vm, f"{command} 2>&1; echo \"rc=$?\"", check=False)
    rc = int(re.search(r"rc=(\d+)\s*$", out)[1])
    return rc, out


def test_a_wrong_repository_password_fails_the_run_sets_the_metric_and_alerts():
    since = time.time()
    sh(APP, "cp -p /etc/vmstack/backup/agent.password /root/agent.password.good"
            " && echo wrong-password-on-purpose > /etc/vmstack/backup/agent.password")
    try:
        rc, out = subprocess_rc(APP, f"systemctl start {UNIT}")
        assert rc != 0
        status = sh(APP, "cat /var/lib/prometheus/node-exporter/vmstack_backup_agent.prom")
        assert 'vmstack_backup_last_exit_status{app="agent"} 1' in status
        journal = sh(APP, f"journalctl -u {UNIT} -o cat --since -2min | grep -i error | tail -2")
        print(f"\n{journal.strip()}")
        assert "wrong password" in journal
        got = wait_for(lambda: delivered("BackupFailed", "firing", since, app="agent"), 120, 3)
        print(f"BackupFailed delivered {got:.1f} s after the failed run started")
        assert got is not None
    finally:
        sh(APP, "mv /root/agent.password.good /etc/vmstack/backup/agent.password")
    backup_now()
    assert 'vmstack_backup_last_exit_status{app="agent"} 0' in sh(
        APP, "cat /var/lib/prometheus/node-exporter/vmstack_backup_agent.prom")


ROTATED = "molecule-backup-password-rotated-91c3e7"
RESTIC = ("python3 -c 'import json, shlex; c = json.load(open(\"/etc/vmstack/backup/agent.json\")); "
          "print(shlex.join([\"restic\", \"-r\", c[\"repository\"], *c[\"restic_options\"]]))'")


def opens_with(password: str) -> bool:
    """Does this password open the repository (restic cat config)?"""
    rc, _ = subprocess_rc(APP, f"printf %s {password} > /root/try.pw; eval \"$({RESTIC}) --password-file /root/try.pw"
                               f" cat config\" >/dev/null 2>&1; rc=$?; rm -f /root/try.pw; test $rc -eq 0")
    return rc == 0


def test_a_new_repository_password_is_rolled_in_and_the_old_one_no_longer_opens_it():
    old = "molecule-backup-password-5d2c8e17"
    rotated = run_role(APP, "backup", {"backup_password": ROTATED})
    assert rotated.returncode == 0, rotated.stdout[-2000:]
    assert recap(rotated)[APP]["failed"] == 0
    try:
        assert opens_with(ROTATED) and not opens_with(old)
        backup_now()
    finally:
        back = run_role(APP, "backup", {})
        assert back.returncode == 0, back.stdout[-2000:]
    assert opens_with(old) and not opens_with(ROTATED)
    assert sh(APP, "restic version >/dev/null; ls /etc/vmstack/backup").split() == [
        "agent.env", "agent.json", "agent.password", "known_hosts"]
    print(f"\nthe password rotated and back: each run replaced the repository's key ({len(runs())} runs readable)")


BAD_RESTORES = {
    "no-confirmation": ({}, "Confirm with -e backup_restore_confirm=agent. Nothing was changed."),
    "another-app": ({"backup_restore_confirm": "billing"}, "Confirm with -e backup_restore_confirm=agent"),
    "no-such-snapshot": ({"backup_restore_confirm": "agent", "backup_restore_snapshot": "deadbeef00"},
                         "no run or snapshot 'deadbeef00' in the repository"),
    "before-the-first": ({"backup_restore_confirm": "agent", "backup_restore_snapshot": "2001-01-01T00:00:00Z"},
                         "no complete run at or before 2001-01-01T00:00:00Z"),
}
BAD_SETUPS = {
    "no-password": ({"backup_password": ""}, "backup_password from Vault, at least 16"),
    "bad-repository": ({"backup_repository": "ftp://somewhere"}, "need backup_repository as an absolute path"),
    "bad-calendar": ({"backup_on_calendar": "every night"}, "systemd does not understand every night"),
}


def test_bad_input_is_refused_with_a_clear_error_and_touches_nothing():
    before = (sh(APP, "docker ps -q | xargs docker inspect -f '{{.Name}} {{.State.StartedAt}}' | sort"), state(), len(runs()),
              sh(APP, "md5sum /etc/vmstack/backup/* /etc/systemd/system/vmstack-backup*"))
    result, outputs = run_aliases(APP, {c: v for c, (v, _) in BAD_RESTORES.items()}, playbook=RESTORE, groups=["app"])
    setup, setups = run_aliases(APP, {c: v for c, (v, _) in BAD_SETUPS.items()},
                                playbook=PROJECT_DIR / "playbooks" / "backup.yml", groups=["app"])
    counts = {**recap(result), **recap(setup)}
    for case, (_, message) in {**BAD_RESTORES, **BAD_SETUPS}.items():
        out = {**outputs, **setups}[case]
        assert counts[f"{APP}-{case}"]["failed"] == 1, out[-2000:]
        assert counts[f"{APP}-{case}"]["changed"] == 0, out[-2000:]
        assert message in re.sub(r"\s+", " ", out), (case, out[-2000:])
        print(f"{case:18} refused: {message}")
    after = (sh(APP, "docker ps -q | xargs docker inspect -f '{{.Name}} {{.State.StartedAt}}' | sort"), state(), len(runs()),
             sh(APP, "md5sum /etc/vmstack/backup/* /etc/systemd/system/vmstack-backup*"))
    assert after == before


BENCH = """
set -e
rm -f /var/tmp/bench.log
t() { local s=$(date +%s.%N); "$@" >/dev/null 2>>/var/tmp/bench.log; echo "$(date +%s.%N) - $s" | bc; }
pg() { docker exec -i agent-postgres "$@"; }
set -a; . /etc/vmstack/backup/agent.env; set +a
export RESTIC_REPOSITORY=$(python3 -c 'import json; print(json.load(open("/etc/vmstack/backup/agent.json"))["repository"])')
R="restic $(python3 -c 'import json, shlex; print(shlex.join(json.load(open("/etc/vmstack/backup/agent.json"))["restic_options"]))')"
# (the rows just written: a first read sets their hint bits, which would slow whatever reads them first)
pg psql -U agent -d agent -qc "vacuum analyze agent_runs"
docker exec agent-postgres pg_dump -U agent -d agent > /dev/null
size=$(pg psql -U agent -d agent -tAc "select pg_database_size('agent')")
plain=$(t sh -c 'docker exec agent-postgres pg_dump -U agent -d agent > /var/tmp/plain.sql')
custom=$(t sh -c 'docker exec agent-postgres pg_dump -Fc -U agent -d agent > /var/tmp/custom.dump')
# restic alone, the dump already in a file (in the page cache), into a new local repository: the floor
# of any design that streams a dump into restic, with nothing else running beside it
# (before the restore below, which starts the whole stack again).
restic -r /var/tmp/bench-repo init >/dev/null
alone=$(t restic -r /var/tmp/bench-repo backup --stdin --stdin-filename plain.sql < /var/tmp/plain.sql)
rm -rf /var/tmp/bench-repo && restic -r /var/tmp/bench-repo init >/dev/null
alone_off=$(t restic -r /var/tmp/bench-repo backup --compression off --stdin --stdin-filename plain.sql < /var/tmp/plain.sql)
rm -rf /var/tmp/bench-repo
ours=$(t vmstack-backup run agent --kind manual)
again=$(t vmstack-backup run agent --kind manual)
added=$(grep -o '[0-9]* bytes added' /var/tmp/bench.log | tail -1 | cut -d' ' -f1)
total=$(eval "$R --no-lock stats --mode raw-data --json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_size"])')
c1=$(eval "$R backup --stdin --stdin-filename custom.dump --tag bench --json" < /var/tmp/custom.dump | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["data_added_packed"])')
pg psql -U agent -d agent -qc "update agent_runs set output = md5(output) where id in (select id from agent_runs limit 100)"
docker exec agent-postgres pg_dump -Fc -U agent -d agent > /var/tmp/custom2.dump
c2=$(eval "$R backup --stdin --stdin-filename custom.dump --tag bench --json" < /var/tmp/custom2.dump | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["data_added_packed"])')
docker exec agent-postgres pg_dump -U agent -d agent > /var/tmp/plain2.sql
p2=$(eval "$R backup --stdin --stdin-filename plain.sql --tag bench --json" < /var/tmp/plain.sql | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["data_added_packed"])')
p3=$(eval "$R backup --stdin --stdin-filename plain.sql --tag bench --json" < /var/tmp/plain2.sql | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["data_added_packed"])')
eval "$R forget --prune $(eval "$R --no-lock snapshots --tag bench --json" | python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))')" >/dev/null
pg psql -U agent -d postgres -qc "drop database if exists bench_pgr" -c "create database bench_pgr owner agent"
pgrestore=$(t sh -c 'docker exec -i agent-postgres pg_restore -U agent -d bench_pgr < /var/tmp/custom.dump')
pg psql -U agent -d postgres -qc "drop database bench_pgr"
restore=$(t vmstack-backup restore agent latest --yes-destroy-current-data agent)
rm -f /var/tmp/plain.sql /var/tmp/plain2.sql /var/tmp/custom.dump /var/tmp/custom2.dump
stream=$(grep -o 'streamed into the repository in [0-9.]*' /var/tmp/bench.log | head -1 | awk '{print $NF}')
dbload=$(grep -o 'database agent loaded in [0-9.]*' /var/tmp/bench.log | tail -1 | awk '{print $NF}')
echo "$size $plain $custom $ours $again $added $total $c1 $c2 $p2 $p3 $pgrestore $restore $stream $dbload $alone $alone_off"
"""


def test_benchmark_backup_and_restore_of_a_200_mb_database():
    """Side by side in one run (VMSTACK_BENCH=1; figures in docs/benchmarks.md): a backup run against
    plain pg_dump, the in-place restore against pg_restore, what a second run of an unchanged database
    adds, and why the dump is plain SQL (a custom-format dump defeats restic's deduplication)."""
    import os  # pylint: disable=import-outside-toplevel
    import pytest  # pylint: disable=import-outside-toplevel
    if os.environ.get("VMSTACK_BENCH") != "1":
        pytest.skip("a benchmark: VMSTACK_BENCH=1")
    rows = int(os.environ.get("VMSTACK_BENCH_ROWS", "600000"))
    psql(f"INSERT INTO agent_runs (id, thread_id, input, output, status, source) SELECT gen_random_uuid(), "
         f"'bench-' || (g % 997), repeat(md5(g::text), 8), md5(g::text || 'out'), 'succeeded', 'worker' "
         f"FROM generate_series(1, {rows}) g")
    sh(APP, "apt-get install -y -qq bc >/dev/null")
    v = sh(APP, BENCH, timeout=1800).split()
    size, plain, custom, ours, again, added, total, c1, c2, p2, p3, pgrestore, restore, stream, dbload, alone, off = v
    f = float
    print(f"\ndatabase {int(size) / 1e6:.0f} MB (pg_database_size)"
          f"\nbackup:  plain pg_dump to a file {f(plain):.1f} s, pg_dump -Fc {f(custom):.1f} s, vmstack-backup run "
          f"{f(ours):.1f} s (ratio to plain pg_dump {f(ours) / f(plain):.2f}; its database part {f(stream):.1f} s, "
          f"ratio {f(stream) / f(plain):.2f}), again unchanged {f(again):.1f} s"
          f"\nsecond run of the unchanged database: {int(added) / 1e6:.2f} MB added to a repository of "
          f"{int(total) / 1e6:.1f} MB ({100 * int(added) / int(total):.2f} %)"
          f"\ndeduplication after 100 changed rows: custom format {int(c1) / 1e6:.1f} MB then {int(c2) / 1e6:.1f} MB"
          f" added; plain SQL {int(p2) / 1e6:.1f} MB then {int(p3) / 1e6:.1f} MB added"
          f"\nrestore: pg_restore of the custom dump {f(pgrestore):.1f} s, vmstack-backup restore (stack stopped, "
          f"database, Redis, files, stack started) {f(restore):.1f} s (ratio {f(restore) / f(pgrestore):.2f}; "
          f"its database part {f(dbload):.1f} s, ratio {f(dbload) / f(pgrestore):.2f})"
          f"\nrestic alone, the plain dump from a cached file into a new local repository: {f(alone):.1f} s (ratio "
          f"to plain pg_dump {f(alone) / f(plain):.2f}), --compression off {f(off):.1f} s ({f(off) / f(plain):.2f})")
    psql("DELETE FROM agent_runs WHERE thread_id LIKE 'bench-%'")
    psql("VACUUM FULL agent_runs")
