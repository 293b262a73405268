"""The multi-host layout converged by playbooks/deploy.yml over SSH: requests through the load
balancer reach the replicas of both app hosts, which share the data host's PostgreSQL and Redis;
beat runs once; each host's firewall admits what its role needs from the hosts that need it, and
nothing else."""

import functools
import json
import re
import shlex
import subprocess
import time
import uuid

import pytest
import testinfra
from bedtest import PROJECT_DIR, recap, resident_mib, run_playbook, wait_for
from loadtest import Traffic

testinfra_hosts = ["mh-lb"]

NAME = "agent.vmstack.test"
APP_HOSTS = ["mh-app1", "mh-app2"]
VMS = ["mh-lb", *APP_HOSTS, "mh-db"]
DEPLOY = PROJECT_DIR / "playbooks" / "deploy.yml"
APP = PROJECT_DIR / "playbooks" / "app.yml"
PREFLIGHT = PROJECT_DIR / "playbooks" / "preflight.yml"
SUMMARY = PROJECT_DIR / "playbooks" / "summary.yml"
LOCK = "/var/lib/vmstack/agent.deploy.lock"  # the inventory's, on the first app host
IMAGE = "vmstack/agent-app"


@functools.cache
def vm(name: str):
    return testinfra.get_host(f"docker://{name}")


@functools.cache
def address(name: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name],
                          capture_output=True, text=True, check=True).stdout.strip()


def curl(args: str) -> str:
    """curl on the load balancer against its nginx, trusting the site's certificate."""
    return vm("mh-lb").check_output(
        f"curl -sS --max-time 30 --cacert /etc/nginx/tls/agent/fullchain.pem --resolve {NAME}:443:127.0.0.1 {args}")


def log_lines(offset: int) -> list[dict]:
    text = vm("mh-lb").check_output(f"tail -c +{offset + 1} /var/log/nginx/access.log")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def psql(sql: str) -> str:
    return vm("mh-db").check_output(
        f"docker exec agent-postgres psql -U agent -d agent -tAc {shlex.quote(sql)}").strip()


def connects(source: str, target: str, port: int) -> bool:
    """A TCP connection from one VM to another's private address (a firewall drop times out)."""
    probe = (f"import socket; socket.create_connection(({address(target)!r}, {port}), timeout=3).close()")
    return vm(source).run(f"python3 -c {shlex.quote(probe)}").rc == 0


def services(name: str) -> set[str]:
    out = vm(name).check_output("docker ps --format '{{.Label \"com.docker.compose.service\"}}'")
    return set(out.split())


def test_requests_through_the_load_balancer_reach_both_app_hosts():
    offset = int(vm("mh-lb").check_output("stat -c %s /var/log/nginx/access.log"))
    for _ in range(16):
        assert json.loads(curl(f"https://{NAME}/ready"))["checks"] == {"postgres": "ok", "redis": "ok"}
    upstreams = {entry["upstream_addr"].rsplit(":", 1)[0] for entry in log_lines(offset) if entry["upstream_addr"]}
    print(f"\n/ready answered from {sorted(upstreams)}")
    assert upstreams == {address(host) for host in APP_HOSTS}


def test_both_app_hosts_store_in_the_data_hosts_database():
    text = "count the words in request " + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex)
    run_ids = []
    for _ in range(4):
        body = curl(f"-X POST -H 'Content-Type: application/json' -d {shlex.quote(json.dumps({'input': text}))} "
                    f"https://{NAME}/v1/agent/invoke")
        run_ids.append(json.loads(body)["run_id"])
    ids = ", ".join(f"'{run_id}'" for run_id in run_ids)
    assert psql(f"select count(*) from agent_runs where id in ({ids}) and status = 'succeeded'") == "4"


def test_the_data_runs_on_the_data_host_and_beat_once():
    assert services("mh-db") == {"postgres", "redis"}
    assert services("mh-app1") == {"api-1", "api-2", "worker", "beat"}
    assert services("mh-app2") == {"api-1", "api-2", "worker"}
    env = vm("mh-app2").check_output("cat /opt/agent/app.env")
    assert f"REDIS_URL=redis://{address('mh-db')}:6379/0" in env
    secret = vm("mh-app2").check_output("cat /opt/agent/secrets/database_url")
    assert f"@{address('mh-db')}:5432/agent" in secret
    # The data host holds only what its servers read.
    assert vm("mh-db").check_output("ls /opt/agent/secrets").split() == ["postgres_password", "redis_conf", "redis_password"]


@pytest.mark.parametrize(("source", "target", "port", "admitted"), [
    ("mh-app1", "mh-db", 5432, True),
    ("mh-app2", "mh-db", 6379, True),
    ("mh-lb", "mh-db", 5432, False),
    ("mh-lb", "mh-db", 6379, False),
    ("mh-lb", "mh-app2", 8001, True),
    ("mh-app1", "mh-app2", 8001, False),
    ("mh-db", "mh-app1", 8002, True),    # Prometheus scrapes the replicas
    ("mh-db", "mh-app1", 9100, True),    # and the node exporter
    ("mh-app2", "mh-app1", 9100, False),
])
def test_each_firewall_admits_its_peers_only(source, target, port, admitted):
    assert connects(source, target, port) is admitted


@pytest.mark.parametrize(("extra", "refusal"), [
    ({"vmstack_preflight_min_free_mb": 10**9}, "MiB are needed (vmstack_preflight_min_free_mb). Nothing was changed."),
    ({"app_secret_key": ""}, "needs app_secret_key, which is empty or unset"),
])
def test_the_preflight_refuses_before_anything_changes(extra, refusal):
    result = run_playbook(PREFLIGHT, extra)
    out = " ".join(result.stdout.split())
    assert result.returncode != 0 and refusal in out, out[-3000:]
    assert all(counts["changed"] == 0 for counts in recap(result).values())


def build(name: str, tag: str, dockerfile: str):
    """An image built on an app host from the one that is there (no registry)."""
    subprocess.run(["docker", "exec", "-i", name, "sh", "-c", f"DOCKER_BUILDKIT=0 docker build -q -t {tag} -"],
                   input=dockerfile, text=True, capture_output=True, timeout=300, check=True)


def release(name: str) -> str:
    return json.loads(vm(name).check_output("cat /opt/agent/release.json"))["release"]["version"]


def images(name: str) -> set[str]:
    return set(vm(name).check_output(
        "docker ps --filter label=com.docker.compose.project=agent --format '{{.Image}}'").split())


def traffic() -> Traffic:
    return Traffic("mh-lb", NAME, "/etc/nginx/tls/agent/fullchain.pem", short=20, invoke=10, stream=10, warm_up=10)


def test_a_release_across_both_app_hosts_under_load_fails_no_request():
    for host in APP_HOSTS:
        build(host, f"{IMAGE}:0.1.1", f"FROM {IMAGE}:0.1.0\nLABEL release=0.1.1\n")
    with traffic() as load:
        result = run_playbook(APP, {"app_image": f"{IMAGE}:0.1.1"})
        used = memory()
    print(load.report("release 0.1.0 -> 0.1.1 across mh-app1, then mh-app2"))
    print(f"--- memory under the load, after the release: {used}")
    assert result.returncode == 0, result.stdout[-4000:]
    load.assert_clean(requests=1000, stream_seconds=6, invoke_seconds=1.5, p99_ratio=None)
    assert {host: release(host) for host in APP_HOSTS} == {"mh-app1": "0.1.1", "mh-app2": "0.1.1"}
    assert all(images(host) == {f"{IMAGE}:0.1.1"} for host in APP_HOSTS)
    # One host at a time: mh-app2's replacements began after mh-app1's run ended.
    first, second = (json.loads(vm(host).check_output("tail -n 1 /opt/agent/deploy.log")) for host in APP_HOSTS)
    assert first["to"] == second["to"] == "0.1.1" and first["at"] <= second["since"], (first, second)
    # The inventory's lock was held for the whole run, on the first app host, and given back.
    assert vm("mh-app1").run(f"test -s {LOCK}").rc != 0


def test_a_release_while_the_inventory_is_locked_changes_nothing():
    """Another run holds the inventory's lock (on mh-app1): a release against mh-app2 alone is refused
    at once, naming the holder, before any host changes."""
    vm("mh-app1").check_output(f"echo '{{\"by\": \"ci@elsewhere\", \"token\": \"other\"}}' > {LOCK}")
    try:
        result = run_playbook(APP, {"app_image": f"{IMAGE}:0.1.0"}, args=["--limit", "mh-app2"])
    finally:
        vm("mh-app1").check_output(f"rm -f {LOCK}")
    out = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert "is being deployed by another run, nothing was changed" in out and "ci@elsewhere" in out, out[-3000:]
    assert recap(result)["mh-app2"]["changed"] == 0
    assert release("mh-app2") == "0.1.1"


def test_the_second_host_failing_its_gate_returns_the_first_too():
    """0.1.2 starts on mh-app1 and never gets ready on mh-app2 (a broken build there): mh-app2 returns,
    then mh-app1, which had taken it, returns too; every replica runs 0.1.1 again, under load."""
    build("mh-app1", f"{IMAGE}:0.1.2", f"FROM {IMAGE}:0.1.0\nLABEL release=0.1.2\n")
    build("mh-app2", f"{IMAGE}:0.1.2", f"FROM {IMAGE}:0.1.0\nLABEL release=0.1.2\n"
          'ENTRYPOINT ["sh", "-c", "[ \\"$0\\" = serve ] && exec sleep 3600; exec agent-app \\"$0\\" \\"$@\\""]\n')
    # (and a lock that a run which died two hours ago left: taken over, said so)
    vm("mh-app1").check_output(f"echo '{{\"by\": \"ci@gone\", \"token\": \"dead\"}}' > {LOCK}"
                               f" && touch -d '-2 hours' {LOCK}")
    with traffic() as load:
        result = run_playbook(APP, {"app_image": f"{IMAGE}:0.1.2", "app_ready_timeout": 15})
    print(load.report("release 0.1.2, failing on mh-app2: both returned"))
    out = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert re.search(r'RECLAIMED from a lock held for 7[0-9]{3} s: \{\\?"by\\?": \\?"ci@gone', out), out[-3000:]
    assert "The run failed on mh-app2: app: release 0.1.2 of agent was not deployed: api-1 did not pass its gate" in out, \
        out[-4000:]
    assert "The hosts that had taken the new release before it returned to their previous one: mh-app1." in out, \
        out[-4000:]
    load.assert_clean(requests=1000, stream_seconds=6, invoke_seconds=1.5, p99_ratio=None)
    assert {host: release(host) for host in APP_HOSTS} == {"mh-app1": "0.1.1", "mh-app2": "0.1.1"}
    assert all(images(host) == {f"{IMAGE}:0.1.1"} for host in APP_HOSTS), {h: images(h) for h in APP_HOSTS}
    assert vm("mh-app1").run(f"test -s {LOCK}").rc != 0, "the inventory's lock was kept"
    audit = [json.loads(line) for line in vm("mh-app1").check_output("tail -n 2 /opt/agent/deploy.log").splitlines()]
    assert [(line["from"], line["to"], line["result"]) for line in audit] == [("0.1.1", "0.1.2", "ok"), ("0.1.2", "0.1.1", "ok")]


def test_a_backup_and_its_drill_on_the_data_host():
    """The data host backs up the database both app hosts wrote (in its container, streamed into restic)
    and Redis, and the drill restores that run into throw-away containers and finds it identical."""
    db = vm("mh-db")
    db.check_output("systemctl start vmstack-backup-agent.service")
    run = json.loads(db.check_output("vmstack-backup snapshots agent --json"))[-1]
    assert set(run["parts"]) == {"postgres", "files"}, run  # (Redis's dump is in "files")
    report = json.loads(db.check_output("vmstack-backup drill agent 2>/var/tmp/drill.log"))
    print(f"\n--- drill on mh-db: {db.check_output('cat /var/tmp/drill.log').strip().splitlines()[-2]}")
    assert report["run"] == run["run"]
    assert report["tables"]["public.agent_runs"] == int(psql("select count(*) from agent_runs")) > 0
    assert report["redis_keys"] >= 0
    metrics = db.check_output("cat /var/lib/prometheus/node-exporter/vmstack_backup_agent.prom")
    assert 'vmstack_backup_last_exit_status{app="agent"} 0' in metrics
    assert 'vmstack_backup_drill_last_exit_status{app="agent"} 0' in metrics


def test_the_summary_names_each_endpoint_release_target_and_backup():
    out = run_playbook(SUMMARY).stdout
    print(out[out.index("TASK [The deployment now]"):][:1500])
    assert re.search(r"https://agent\.vmstack\.test/ \(on mh-lb\): certificate valid until \w{3} +\d+ ", out), out[-3000:]
    assert "mh-app1: release 0.1.1 (vmstack/agent-app:0.1.1)" in out and "mh-app2: release 0.1.1" in out, out[-3000:]
    up = re.search(r"Prometheus on mh-db: (\d+) of (\d+) targets up", out)
    assert up and up.group(1) == up.group(2) and int(up.group(2)) >= 10, out[-3000:]
    assert re.search(r"mh-db: last backup 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC", out), out[-3000:]


def memory() -> str:
    """Resident memory of each VM now: its own cgroup and its containers' (beside it on the bed)."""
    def vm_mib(name: str) -> int:
        own = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True,
                             check=True).stdout.strip()
        # (no engine on the load balancer: nothing listed)
        return resident_mib(own) + sum(resident_mib(c) for c in vm(name).run("docker ps -q --no-trunc").stdout.split())
    return ", ".join(f"{name} {vm_mib(name)} MiB" for name in VMS)


def test_an_app_host_powered_off_under_load_is_left_out_and_alerted():
    """mh-app2 killed like a VM losing power, under load: nginx's passive health takes its replicas out
    (a GET that met one goes to the next), and from then on no request fails; the monitoring host
    fires HostDown for it."""
    with Traffic("mh-lb", NAME, "/etc/nginx/tls/agent/fullchain.pem", short=20, invoke=0, stream=0,
                 warm_up=5) as load:
        killed = float(load.vm("date +%s.%N"))
        subprocess.run(["docker", "kill", "mh-app2"], check=True, capture_output=True)
        time.sleep(30)
    records = [json.loads(line) for line in load.vm("cat /root/load.jsonl").splitlines()]
    records = [r for r in records if r["kind"] == "short"]
    failed = [r for r in records if "error" in r or not 200 <= r.get("status", 0) < 300]
    after = [r for r in records if r["start"] > killed + 10]
    print(f"\n--- mh-app2 powered off: {len(records)} requests, {len(failed)} failed, at "
          f"{[round(r['start'] - killed, 1) for r in failed][:10]} s after; {len(after)} requests from 10 s on; "
          f"{load.report('power-off')}")
    assert not [r for r in failed if r["start"] > killed + 10], failed[-3:]
    assert len(after) > 200
    alerts = []

    def host_down() -> bool:
        alerts[:] = json.loads(vm("mh-db").check_output(
            "curl -sf 'http://127.0.0.1:9093/api/v2/alerts?filter=alertname=%22HostDown%22'"))
        return any(a["labels"].get("host") == "mh-app2" for a in alerts)

    wait_for(host_down, timeout=90, interval=3, what="HostDown for mh-app2 in Alertmanager")
    print(f"--- HostDown for mh-app2 {time.time() - killed:.0f} s after the power-off")
