"""The whole one-VM product, converged by playbooks/deploy.yml over SSH:
requests through nginx over TLS, the worker, streams, routes and CORS, logs,
secrets, autoheal, the audits, and day-two operations (a failed release, a
secret rotation under traffic, a dry run)."""

import functools
import json
import os
import re
import shlex
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from bedtest import PROJECT_DIR, ansible_log, recap, resident_mib, run_cases, run_playbook, wait_for
from loadtest import Traffic

testinfra_hosts = ["stack-trixie"]

ROOT = "/opt/agent"
NAME = "agent.vmstack.test"
ORIGIN = "https://app.vmstack.test"
DEPLOY = PROJECT_DIR / "playbooks" / "deploy.yml"
SECRETS = {
    "app_secret_key": "molecule-secret-key-7c1e9a4b",
    "app_postgres_password": "molecule-pg-password-3f8d2e61",
    "app_redis_password": "molecule-redis-password-b94a07d2",
    "app_llm_api_key": "molecule-llm-key-5d0c3e77",
    "tracing_token": "molecule-tracing-token-e1a2b3c4",
}
LYNIS_TARGET = 85
# The scenario's dry run on the fresh VM and converge run Ansible's default
# strategy, as a first deploy. The dry run after converge (later.yml), the
# second deploy (the idempotence run, first below), the harden role's re-run
# and a release refused on the lock use the Mitogen strategy, as
# inventories/example/ansible.cfg lets operators opt in for day two (about
# half the controller's work: the suite's budget). The runs where the
# strategy and the connection make a difference run Ansible's default, as an
# operator who does not opt in: the rotation of every secret (-vvv over
# Ansible's own SSH connection, grepped for leaks), the SSH port move (the
# run's own connection moves), the rolling restart, the release and the
# rollback under load.
MITOGEN = "mitogen_linear"
LINEAR = "linear"
ROTATED: dict = {}  # the values test_rotating_every_secret_under_traffic put in place
REFUSED_KEY = "refused-release-key-2b7d"  # the secret of the release that is rolled back
REFUSED_PG_PASSWORD = "refused-pg-password-6e1f"  # its database password, given back to the old one


def curl(host, args: str, check: bool = True):
    """curl on the VM against nginx (127.0.0.1), trusting the site's certificate."""
    cmd = (f"curl -sS --max-time 30 --cacert /etc/nginx/tls/agent/fullchain.pem "
           f"--resolve {NAME}:443:127.0.0.1 --resolve {NAME}:80:127.0.0.1 {args}")
    return host.check_output(cmd) if check else host.run(cmd)


def response(host, url: str, extra: str = "") -> tuple[int, dict, str]:
    """status, lower-cased headers, body."""
    out = curl(host, f"-D - {extra} {shlex.quote(url)}")
    head, _, body = out.replace("\r", "").partition("\n\n")
    lines = head.splitlines()
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers.setdefault(key.strip().lower(), value.strip())
    return int(lines[0].split()[1]), headers, body


def compose(host, args: str) -> str:
    return host.check_output(f"docker compose --project-directory {ROOT} {args}")


def container_ids(host) -> dict:
    rows = [json.loads(line) for line in compose(host, "ps --all --format json").splitlines() if line.strip()]
    return {row["Service"]: row["ID"] for row in rows}


def healthy(host) -> bool:
    return host.run("/usr/local/sbin/vmstack-app-health report agent").rc == 0


def psql(host, sql: str) -> str:
    return compose(host, f"exec -T postgres psql -U agent -d agent -tAc {shlex.quote(sql)}").strip()


def letters() -> str:
    """A unique input without digits (digits make the planner pick the calculator)."""
    return "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex)


# --- day two: the same deploy again, past every threshold -----------------------------------

def test_a_second_deploy_past_every_threshold_changes_nothing(host):
    """First, right after later.yml waited past every health threshold: deploy.yml again, whole, as the
    scenario's idempotence run (zero changed). With Mitogen, the opt-in inventories/example/ansible.cfg
    documents, at about half the time of `linear` (docs/benchmarks.md); the dry run on the fresh VM,
    converge, the rotation, the SSH port move and the releases run `linear`."""
    result = run_playbook(DEPLOY, strategy=MITOGEN)
    assert result.returncode == 0, result.stdout[-4000:]
    assert recap(result)["stack-trixie"]["changed"] == 0, changed_tasks(result)
    assert healthy(host)


# --- the front door ------------------------------------------------------------------------

def test_https_is_the_front_door(host):
    status, headers, body = response(host, f"https://{NAME}/ready")
    assert status == 200, body
    assert json.loads(body)["checks"] == {"postgres": "ok", "redis": "ok"}
    assert headers["strict-transport-security"].startswith("max-age=63072000")
    status, headers, _ = response(host, f"http://{NAME}/ready")
    assert status == 308 and headers["location"] == f"https://{NAME}/ready"


def test_only_ssh_and_nginx_listen_beyond_loopback(host):
    listeners = host.check_output("ss -Hltn | awk '{print $4}'").split()
    public = {addr.rsplit(":", 1)[1] for addr in listeners
              if not re.match(r"^(127\.|\[::1\]|\[::ffff:127\.)", addr)}
    assert public == {"22", "80", "443"}, listeners


def test_invoke_through_nginx_is_stored(host):
    text = f"count the words in request {letters()}"
    status, _, body = response(host, f"https://{NAME}/v1/agent/invoke",
                               f"-X POST -H 'Content-Type: application/json' -d {shlex.quote(json.dumps({'input': text}))}")
    assert status == 200, body
    run = json.loads(body)
    assert "word_count" in run["output"]
    assert psql(host, f"select status, source from agent_runs where id = '{run['run_id']}'") == "succeeded|api"


def test_queued_run_is_executed_by_the_worker(host):
    status, _, body = response(host, f"https://{NAME}/v1/agent/runs",
                               "-X POST -H 'Content-Type: application/json' -d '{\"input\": \"what is 6 * 7\"}'")
    assert status == 202, body
    run_id = json.loads(body)["run_id"]

    def finished():
        run = json.loads(curl(host, f"https://{NAME}/v1/agent/runs/{run_id}"))
        return run["status"] in ("succeeded", "failed") and run
    assert wait_for(finished, timeout=60, what="the worker")["status"] == "succeeded"
    assert psql(host, f"select source from agent_runs where id = '{run_id}'") == "worker"


def test_stream_arrives_as_server_sent_events(host):
    out = curl(host, f"-N 'https://{NAME}/v1/agent/stream?input=stream+me+some+tokens'")
    assert len(re.findall(r"^data: \{.*\}$", out, re.M)) >= 3
    assert "event: done" in out


def test_routes_frontend_cached_api_on_its_path(host):
    page = f"https://{NAME}/?probe={uuid.uuid4().hex}"
    first, second = response(host, page), response(host, page)
    assert first[0] == 200 and "<h1>agent</h1>" in first[2]
    assert (first[1]["x-cache-status"], second[1]["x-cache-status"]) == ("MISS", "HIT")
    assert second[1]["strict-transport-security"], "route with its own headers lost the site's headers"
    status, _, body = response(host, f"https://{NAME}/v1/agent/runs/00000000-0000-0000-0000-000000000000")
    assert status == 404 and "detail" in json.loads(body)


def test_cors_preflight_and_request_from_an_allowed_origin_only(host):
    status, headers, _ = response(host, f"https://{NAME}/v1/agent/invoke",
                                  f"-X OPTIONS -H 'Origin: {ORIGIN}' -H 'Access-Control-Request-Method: POST' "
                                  "-H 'Access-Control-Request-Headers: content-type'")
    assert status == 204
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in headers["access-control-allow-methods"]
    assert "Content-Type" in headers["access-control-allow-headers"]
    status, headers, body = response(host, f"https://{NAME}/v1/agent/invoke",
                                     f"-X POST -H 'Origin: {ORIGIN}' -H 'Content-Type: application/json' "
                                     "-d '{\"input\": \"cross origin\"}'")
    assert status == 200, body
    assert headers["access-control-allow-origin"] == ORIGIN
    for method in ("OPTIONS", "POST"):
        status, headers, _ = response(host, f"https://{NAME}/v1/agent/invoke",
                                      f"-X {method} -H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: POST' "
                                      "-H 'Content-Type: application/json' -d '{\"input\": \"x\"}'")
        assert not any(h.startswith("access-control-allow") for h in headers), (method, headers)


# --- what the app role keeps -----------------------------------------------------------------

def test_secret_files_private_and_extra_secret_delivered_as_a_file(host):
    expected = {"app_secret_key": "agent", "database_password": "agent", "redis_password": "agent",
                "llm_api_key": "agent", "tracing_token": "agent", "postgres_password": "999", "redis_conf": "999"}
    for name, owner in expected.items():
        f = host.file(f"{ROOT}/secrets/{name}")
        assert f.mode == 0o400, name
        assert (f.user if owner == "agent" else str(f.uid)) == owner, name
    inside = host.check_output("docker exec agent-api-1 sh -c 'stat -c %a /run/secrets/tracing_token; "
                               "cat /run/secrets/tracing_token; echo; echo $TRACING_TOKEN_FILE'").split()
    assert inside == ["400", SECRETS["tracing_token"], "/run/secrets/tracing_token"]


def test_data_volume_persists_across_recreation(host):
    labels = json.loads(host.check_output("docker volume inspect agent_data --format '{{json .Labels}}'"))
    assert labels["vmstack.backup"] == "files" and labels["vmstack.app"] == "agent"
    host.check_output("docker exec agent-worker sh -c 'echo kept > /data/probe'")
    compose(host, "up -d --force-recreate --wait worker")
    assert host.check_output("docker exec agent-api-1 cat /data/probe") == "kept"


def test_logs_outlive_the_container_and_are_found_by_request_id(host):
    request_id = f"molecule-{uuid.uuid4().hex}"
    curl(host, f"-o /dev/null -H 'X-Request-ID: {request_id}' https://{NAME}/ready")

    def in_journal():
        return host.run(f"journalctl --no-pager -o cat COM_DOCKER_COMPOSE_PROJECT=agent -g {request_id}").stdout.strip()
    line = wait_for(in_journal, timeout=20, what="the request in the journal")
    assert json.loads(line.splitlines()[-1])["request_id"] == request_id
    old = {c: host.check_output(f"docker inspect -f '{{{{.Id}}}}' agent-{c}") for c in ("api-1", "api-2")}
    compose(host, "up -d --force-recreate --wait api-1 api-2")
    assert host.check_output("docker inspect -f '{{.Id}}' agent-api-1") != old["api-1"]
    assert request_id in in_journal(), "the recreated container's predecessor's log is gone"
    assert host.run("docker logs --tail 5 agent-api-1").rc == 0


def test_a_hung_beat_goes_unhealthy_and_autoheal_restarts_it(host):
    before = host.check_output("docker inspect -f '{{.State.StartedAt}}' agent-beat")
    pid = host.check_output("docker inspect -f '{{.State.Pid}}' agent-beat")
    host.check_output(f"kill -STOP {pid}")
    try:
        wait_for(lambda: host.check_output("docker inspect -f '{{.State.StartedAt}}' agent-beat") != before,
                 timeout=90, interval=2, what="autoheal to restart the hung beat")
    finally:
        host.run(f"kill -CONT {pid}")
    log = host.check_output("journalctl -u vmstack-autoheal-agent --no-pager -o cat")
    assert re.search(r"autoheal: restarting agent-beat \(turned unhealthy; last check exit 1", log), log
    wait_for(lambda: healthy(host), timeout=90, what="every container healthy again")


# --- the composed host -----------------------------------------------------------------------

def test_lynis_on_the_composed_host(host):
    report = host.file("/root/lynis-report.dat").content_string
    index = int(re.search(r"^hardening_index=(\d+)$", report, re.M).group(1))
    print(f"\n--- Lynis hardening index of the composed stack host: {index}")
    assert index >= LYNIS_TARGET


def test_ssh_audit_no_fail_no_warn(host):
    out = host.run("ssh-audit --no-colors 127.0.0.1").stdout
    print(f"\n--- ssh-audit on the composed host ---\n{out}")
    assert "(kex)" in out
    assert [line for line in out.splitlines() if "[fail]" in line or "[warn]" in line] == []


def test_docker_networking_intact_after_hardening(host):
    network = "agent_default"
    out = host.check_output(f"docker run --rm --network {network} vmstack/busybox:1 "
                            "wget -q -O - http://api-1:8000/health")
    assert json.loads(out)["status"] == "ok"
    gateway = host.check_output("ip -4 route show default | awk '{print $3}'")
    assert host.run(f"docker run --rm --network {network} vmstack/busybox:1 ping -c 1 -W 3 {gateway}").rc == 0


def test_idle_memory(host):
    """Printed for docs/benchmarks.md. With the host's cgroup namespace, the
    VM's own containers get cgroups beside the VM's: the VM is their sum."""
    vm = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", "stack-trixie"], capture_output=True, text=True,
                        check=True).stdout.strip()
    inner = host.check_output("docker ps -q --no-trunc").split()
    used = {"the VM's systemd, sshd, nginx, dockerd...": resident_mib(vm)}
    used.update({host.check_output(f"docker inspect -f '{{{{.Name}}}}' {c}"): resident_mib(c) for c in inner})
    total = sum(used.values())
    print(f"\n--- resident memory of the idle one-VM stack: {total} MiB in all\n"
          + "\n".join(f"  {name}: {mib} MiB" for name, mib in used.items()))
    assert 0 < total < 2048, "the one-VM stack must fit a 2 GiB VM"


# --- day two ------------------------------------------------------------------------------

HARDEN = PROJECT_DIR / "playbooks" / "harden.yml"
LOCKOUTS = {
    "sources-without-the-controller": ({"harden_firewall_ssh_sources": ["192.0.2.0/24"]},
                                       "harden_firewall_ssh_sources (192.0.2.0/24) leaves out"),
    "sudo-off-for-the-login-user": ({"harden_admin_sudo": False}, "harden_admin_sudo=false would take that away"),
    "sudo-asks-a-password": ({"harden_admin_sudo_nopasswd": False}, "harden_admin_sudo_nopasswd=false"),
    "admin-renamed": ({"harden_admin_user": "ops"}, "harden_admin_user changes from deploy"),
    "listen-without-this-address": ({"harden_ssh_listen_addresses": ["127.0.0.1"]}, "the address this run reaches"),
    "allowusers-through-extra-options": ({"harden_ssh_extra_options": {"AuthenticationMethods": "password"}},
                                         "sets AuthenticationMethods"),
}


@pytest.fixture(scope="module")
def lockout_runs(host):
    """Over SSH as the admin user, every lock-out attempt in one run of harden.yml (each an alias
    of the VM with its own vars), the host's SSH and sudo state around them."""
    state = lambda: host.check_output(  # noqa: E731
        "cat /etc/ssh/sshd_config.d/*.conf /etc/nftables.conf /etc/sudoers.d/* /etc/fail2ban/jail.local | sha256sum")
    before = state()
    outputs = run_cases("stack-trixie", {case: extra for case, (extra, _) in LOCKOUTS.items()}, playbook=HARDEN)
    return before, state(), outputs


@pytest.mark.parametrize("case", LOCKOUTS)
def test_lockout_refused_before_any_change(lockout_runs, case):
    before, after, outputs = lockout_runs
    out = " ".join(outputs[case].split())
    assert re.search(rf"(fatal|failed): \[stack-trixie-{case}\]", out), out[-3000:]
    assert "refusing to change anything" in out and LOCKOUTS[case][1] in out, out[-3000:]
    assert re.search(rf"stack-trixie-{case} : ok=\d+ changed=0 unreachable=0 failed=1", out), out[-3000:]
    assert after == before, "a refused run changed SSH, sudo or the firewall"
    # and this connection still logs in and becomes root
    assert ssh_as_admin("sudo -n true").returncode == 0


@functools.cache
def vm_address() -> dict:
    """The VM's inventory entry. (Without the scenario's log: ansible-inventory would write every host
    variable, the secrets among them, into the log the leak test reads.)"""
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_LOG_PATH"}
    return json.loads(subprocess.run(["ansible-inventory", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
                                      "--host", "stack-trixie"], capture_output=True, text=True, env=env,
                                     check=True).stdout)


def ssh_as_admin(command: str = "sudo -n true", port: int = 22) -> subprocess.CompletedProcess:
    """A new SSH login as the admin user with the scenario's key, as an operator's next run makes."""
    inventory = vm_address()
    return subprocess.run(["ssh", "-p", str(port), "-i", inventory["ansible_private_key_file"],
                           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
                           f"deploy@{inventory['ansible_host']}", command],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)


def changed_tasks(result) -> str:
    """The tasks of a finished run that reported a change, with their diffs."""
    blocks = re.split(r"\n(?=TASK \[|RUNNING HANDLER \[)", result.stdout)
    return "\n".join(b[:1500] for b in blocks if re.search(r"^changed: ", b, re.M))


def test_dry_run_on_the_converged_host_changes_nothing(host):
    """deploy.yml --check --diff -vvv, run by later.yml right after converge
    (the scenario's re-run at once; the idempotence run, the first test,
    comes after the wait): nothing to change, and with -vvv, which prints every module's
    arguments and results, no secret in its output either."""
    output = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "dry-run-vvv.log").read_text()
    result = subprocess.CompletedProcess([], 0, stdout=output)
    assert output.rstrip().endswith("exit status 0"), output[-3000:]
    assert recap(result)["stack-trixie"]["changed"] == 0, changed_tasks(result)
    # it was verbose: every module's arguments printed (Mitogen, the opt-in it runs with, prints no
    # "ESTABLISH SSH CONNECTION"; the rotation's -vvv run over Ansible's own SSH checks that one)
    assert "task path:" in output and output.count('"module_args"') > 100, output[-3000:]
    for name, value in SECRETS.items():
        assert value not in output, f"{name} in the -vvv output of a dry run"


def test_a_release_that_goes_unhealthy_is_rolled_back_and_says_so(host):
    before = container_ids(host)
    env_before = host.file(f"{ROOT}/app.env").content_string
    services = ("api-1", "api-2", "worker", "beat")
    key = lambda service: host.check_output(f"docker exec agent-{service} cat /run/secrets/app_secret_key")  # noqa: E731
    keys_before = {service: key(service) for service in services}
    # (with new secrets too: the replicas that started with the key must get the old one back, and the
    # running database its previous password; and a third replica, which the rollback removes and must
    # not try to restart. The gate's 45 s: the scenario's healthcheck marks the replica unhealthy
    # after its 10 s start period and two failed checks 10 s apart, 23 s on an idle machine and past
    # 30 s beside another scenario, where Compose's wait then ended before the verdict)
    result = run_playbook(DEPLOY, {"app_env": {"REDIS_URL": "redis://127.0.0.1:1/0"}, "app_wait_timeout": 45,
                                   "app_ready_timeout": 45, "app_secret_key": REFUSED_KEY, "app_api_replicas": 3,
                                   "app_postgres_password": REFUSED_PG_PASSWORD},
                          args=["--tags", "app", "-vvv"], strategy=MITOGEN)
    assert result.returncode != 0
    # verbose, and through Mitogen's connection, not Ansible's ssh plugin
    assert "task path:" in result.stdout and "ESTABLISH SSH CONNECTION" not in result.stdout
    out = " ".join(result.stdout.split())
    # Compose stops at the first unhealthy container; the report names it and its failing check.
    assert re.search(r"agent-\S+ is unhealthy; last check exit 1", out), result.stdout[-4000:]
    assert "GET /ready 503" in out or "redis" in out, result.stdout[-4000:]
    assert "not deployed: api-1 did not pass its gate" in out, result.stdout[-4000:]
    assert re.search(r"Rolled back: the previous release 0\.1\.0 is running again, healthy\. Returned one at a time in [0-9.]+ s: api-1\.", out), \
        result.stdout[-4000:]
    assert host.file(f"{ROOT}/app.env").content_string == env_before
    assert {service: key(service) for service in services} == keys_before, "a service kept the refused release's secret"
    login = "docker exec -e PGPASSWORD={} agent-postgres psql -h 127.0.0.1 -U agent -d agent -tAc 'select 1'"
    assert host.run(login.format(SECRETS["app_postgres_password"])).stdout.strip() == "1", \
        "the database did not get its previous password back"
    assert host.run(login.format(REFUSED_PG_PASSWORD)).rc != 0, "the refused release's password still opens the database"
    assert "api-3" not in container_ids(host), "the failed release's extra replica outlived the rollback"
    assert not host.run(f"ls {ROOT}/*~ {ROOT}/secrets/*~").stdout.strip(), "backups left behind"
    assert healthy(host)
    # The release stopped at its first replica, which went back; the others never left the previous release.
    after = container_ids(host)
    assert {s for s in after if after[s] != before[s]} == {"api-1"}, (before, after)
    log = host.file(f"{ROOT}/deploy.log").content_string.splitlines()
    audit = json.loads(log[-1])
    assert audit["result"].startswith("failed: app: release 0.1.0 of agent was not deployed: api-1"), audit
    assert audit["replaced"] == ["api-1"] and audit["from"] == "0.1.0", audit


class Load:
    """About 8 requests a second through nginx (under the site's 10/s limit),
    from a loop on the VM, each answer's status written down."""

    LOOP = ("end=$(( $(date +%s) + 600 )); while [ $(date +%s) -lt $end ] && [ ! -e /root/load.stop ]; do "
            "curl -s -o /dev/null -w '%{http_code}\\n' --max-time 10 --cacert /etc/nginx/tls/agent/fullchain.pem "
            f"--resolve {NAME}:443:127.0.0.1 https://{NAME}/ready >> /root/load.codes; sleep 0.12; done")

    def __init__(self, host):
        self.host, self.codes = host, []

    def __enter__(self):
        self.host.check_output("rm -f /root/load.codes /root/load.stop")
        self.host.check_output(f"nohup sh -c {shlex.quote(self.LOOP)} >/dev/null 2>&1 &")
        return self

    def __exit__(self, *exc):
        self.host.check_output("touch /root/load.stop && sleep 1")
        self.codes = self.host.check_output("cat /root/load.codes").split()


# Three replicas, a stand-in model of 6 s a call (an invoke makes two: 12 s) and SSE streams of two
# calls and ten tokens 3.5 s apart (50-60 s on this machine: longer than the 30 s after which
# Kamal's proxy cuts them); a drain may wait the default 120 s for them (a busy machine stretches
# the streams). nginx's rate and connection limits are raised for the single client address of the
# load (55 clients; their 429s are the limits doing their job, not a failed release).
ROLL_VARS = {
    "app_api_replicas": 3, "app_env": {"FAKE_LLM_DELAY_SECONDS": "6", "STREAM_TOKEN_DELAY_SECONDS": "3.5"},
    "app_ready_timeout": 30,
    "nginx_limit_req_rate": "500r/s", "nginx_limit_req_burst": 500, "nginx_limit_conn": 500,
}


def test_rotating_every_secret_under_traffic(host):
    """Runs late: the stack keeps the rotated secrets. With -vvv, which prints every module's arguments
    and results into the scenario's log: the leak test greps that log for both sets. The same run
    takes the stack to the release tests' settings (ROLL_VARS: a third replica, a slower stand-in
    model, nginx's limits), as a rotation rides along with other changes in a real release."""
    rotated = {
        "app_secret_key": "rotated-secret-key-0a1b", "app_postgres_password": "rotated-pg-password-2c3d",
        "app_redis_password": "rotated-redis-password-4e5f", "app_llm_api_key": "rotated-llm-key-6a7b",
        "app_extra_secrets": {"tracing_token": "rotated-tracing-token-8c9d"},
    }
    with Load(host) as load:
        result = run_playbook(DEPLOY, {**ROLL_VARS, **rotated}, args=["--tags", "app,nginx", "-vvv"], strategy=LINEAR)
        assert result.returncode == 0, result.stdout[-4000:]
        # verbose (every module's arguments printed), over Ansible's own SSH connection
        assert "task path:" in result.stdout and "module_args" in result.stdout
        assert "ESTABLISH SSH CONNECTION" in result.stdout
        assert healthy(host)
        inside = host.check_output("docker exec agent-api-1 sh -c 'cat /run/secrets/database_password; echo; "
                                   "cat /run/secrets/redis_password'")
        assert inside.split() == [rotated["app_postgres_password"], rotated["app_redis_password"]]
        assert host.run(f"docker exec -e PGPASSWORD={rotated['app_postgres_password']} agent-postgres "
                        "psql -h 127.0.0.1 -U agent -d agent -tAc 'select 1'").stdout.strip() == "1"
        assert host.run(f"docker exec -e PGPASSWORD={SECRETS['app_postgres_password']} agent-postgres "
                        "psql -h 127.0.0.1 -U agent -d agent -tAc 'select 1'").rc != 0, "the old password still works"
        assert host.run(f"docker exec agent-redis redis-cli -a {SECRETS['app_redis_password']} --no-auth-warning "
                        "ping").stdout.strip() != "PONG", "Redis still takes the old password"
    ROTATED.update(rotated)
    failed = [c for c in load.codes if c != "200"]
    print(f"\n--- rotation of every secret under traffic: {len(load.codes)} requests through nginx, "
          f"{len(failed)} not 200 ({sorted(set(failed))})")
    assert len(load.codes) > 100
    assert failed == [], "requests failed while the secrets rotated"
    assert healthy(host)
    status, _, _ = response(host, f"https://{NAME}/ready")
    assert status == 200


def in_vm(command: str) -> str:
    """A root shell on the VM through the engine, not SSH (for what SSH cannot reach)."""
    return subprocess.run(["docker", "exec", "stack-trixie", "sh", "-c", command], capture_output=True,
                          text=True, timeout=120, check=True).stdout


def task_results(output: str) -> dict:
    """task name -> the result lines Ansible printed under it (ok:, changed:, skipping: ...)."""
    results = {}
    for block in output.split("\nTASK [")[1:]:
        name, _, rest = block.partition("]")
        results[name] = re.findall(r"^(ok|changed|skipping|failed|fatal): ", rest, re.M)
    return results


def test_a_file_changed_by_hand_is_put_back_and_the_others_are_not_written(host):
    """The harden role looks up its files once and writes only those that differ in content, mode or
    owner: a banner edited by hand and a drop-in whose mode was loosened are put back; the files that
    still hold what the role writes cost no module run."""
    modprobe = "/etc/modprobe.d/vmstack-harden.conf"
    in_vm(f"echo 'edited by hand' >> /etc/issue.net && chmod 0666 {modprobe}")
    result = run_playbook(HARDEN, args=["--tags", "harden_system,harden_journald"], strategy=MITOGEN)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "edited by hand" not in host.file("/etc/issue.net").content_string
    assert host.file(modprobe).mode == 0o644
    results = task_results(result.stdout)
    banners = "vmstack.deploy.harden : Write the legal banners (BANN-7126, BANN-7130, CIS 1.7)"
    assert sorted(results[banners]) == ["changed", "skipping"], results[banners]  # issue.net, not issue
    untouched = [name for name in results if re.search(
        r"Configure journald|Require strong passwords|Disable core dumps|Stop systemd-coredump|umask", name)]
    assert len(untouched) == 5 and all(results[name] == ["skipping"] for name in untouched), \
        {name: results[name] for name in untouched}
    assert recap(result)["stack-trixie"]["changed"] == 2


def test_moving_the_ssh_port_keeps_the_run_connected_and_closes_the_old_port(host, tmp_path):
    """22 -> 2222 with sshd as a service, then back 2222 -> 22 with sshd socket-activated (ssh.socket, as
    Ubuntu 22.10+ has it), each run over SSH on the port it moves away from: the run itself keeps its way in."""
    assert host.socket("tcp://0.0.0.0:22").is_listening
    tags = ["--tags", "harden_ssh,harden_firewall"]
    # The new port does not answer from the controller (as behind a cloud security group): the run stops
    # with the old port still open and says so.
    blocked = run_playbook(HARDEN, {"harden_ssh_port": 2222, "harden_ssh_move_connect_port": 2299}, args=tags,
                           strategy=LINEAR)
    out = " ".join(blocked.stdout.split())
    assert blocked.returncode != 0, out[-3000:]
    assert "could not log in on 2299" in out and "Port 22 stays open" in out, out[-3000:]
    assert ssh_as_admin(port=22).returncode == 0, "the old port closed although the new one never answered"

    away = run_playbook(HARDEN, {"harden_ssh_port": 2222}, args=tags, strategy=LINEAR)
    out = " ".join(away.stdout.split())
    assert away.returncode == 0, out[-3000:]
    assert "moving SSH from port 22 to 2222" in out
    assert ssh_as_admin(port=2222).returncode == 0
    refused = ssh_as_admin(port=22)
    assert refused.returncode != 0, "port 22 still answers after the move"

    # Socket activation on 2222, as an operator's Ubuntu host would have it, and the inventory's new port
    # (a second inventory source overrides the first's ansible_port, as an edited inventory would).
    in_vm("mkdir -p /etc/systemd/system/ssh.socket.d"
          " && printf '[Socket]\\nListenStream=\\nListenStream=2222\\n' > /etc/systemd/system/ssh.socket.d/00-bed.conf"
          " && systemctl daemon-reload && systemctl disable --now ssh.service 2>/dev/null"
          " && systemctl enable --now ssh.socket 2>/dev/null")
    assert ssh_as_admin(port=2222).returncode == 0
    moved = tmp_path / "moved.yml"
    moved.write_text(json.dumps({"all": {"hosts": {"stack-trixie": {"ansible_port": 2222}}}}))
    back = run_playbook(HARDEN, {"harden_ssh_port": 22}, args=[*tags, "-i", str(moved)], strategy=LINEAR)
    out = " ".join(back.stdout.split())
    assert back.returncode == 0, out[-3000:]
    assert "moving SSH from port 2222 to 22" in out
    assert ssh_as_admin(port=22).returncode == 0
    assert ssh_as_admin(port=2222).returncode != 0, "port 2222 still answers after the move back"
    listeners = in_vm("systemctl is-active ssh.socket; ss -Htln")
    print(f"\n--- after the move back: {' '.join(listeners.split())}")
    assert listeners.startswith("active") and ":2222 " not in listeners


# --- releases under load -------------------------------------------------------------------

APP = PROJECT_DIR / "playbooks" / "app.yml"
ROLLING_RESTART = PROJECT_DIR / "playbooks" / "rolling_restart.yml"
ROLLBACK = PROJECT_DIR / "playbooks" / "rollback.yml"
IMAGE = "vmstack/agent-app"
def roll_vars(**more) -> dict:
    return {**ROTATED, **ROLL_VARS, **more}


def traffic(warm_up: float = 15) -> Traffic:
    """55 clients through nginx: 25 on /ready, 15 invoking, 15 streaming."""
    return Traffic("stack-trixie", NAME, "/etc/nginx/tls/agent/fullchain.pem", warm_up=warm_up)


def build(tag: str, dockerfile: str):
    """An image built on the VM from one that is there (no registry)."""
    subprocess.run(["docker", "exec", "-i", "stack-trixie", "sh", "-c", f"DOCKER_BUILDKIT=0 docker build -q -t {tag} -"],
                   input=dockerfile, text=True, capture_output=True, timeout=300, check=True)


def images(host) -> dict:
    return {svc: host.check_output(f"docker inspect -f '{{{{.Config.Image}}}}' agent-{svc}")
            for svc in ("api-1", "api-2", "api-3", "worker", "beat")}


def audit(host) -> list[dict]:
    return [json.loads(line) for line in host.file(f"{ROOT}/deploy.log").content_string.splitlines()]


def test_a_rolling_restart_and_a_release_under_load_fail_no_request(host):
    """The issue's own repro turned round: under 50 clients with 52 s streams, a rolling restart of 3
    replicas and a release to a new image, each replica drained in nginx until its streams end."""
    # A new version of the image (another ID).
    build(f"{IMAGE}:0.1.1", f"FROM {IMAGE}:0.1.0\nLABEL release=0.1.1\n")
    # (the rotation test above deployed ROLL_VARS)
    assert healthy(host)
    assert host.check_output("grep -c 'server 127.0.0.1:800[123] ' /etc/nginx/vmstack/sites.conf") == "3"

    beat_before = host.check_output("docker inspect -f '{{.Id}}' agent-beat")
    started = time.monotonic()
    with traffic() as restart:
        result = run_playbook(ROLLING_RESTART, roll_vars(), strategy=LINEAR)
    restart_seconds = time.monotonic() - started
    # Beat never ran twice: the old container had died before the new one started.
    beat_after = host.check_output("docker inspect -f '{{.Id}}' agent-beat")
    events = host.check_output(
        f"docker events --since {int(restart.marks[0]) - 60} --until {int(restart.marks[-1]) + 1} "
        "--filter type=container --filter label=com.docker.compose.service=beat "
        "--format '{{.TimeNano}} {{.Actor.ID}} {{.Action}}'").splitlines()
    # (an action can hold spaces: "exec_start: agent-app ping beat", the healthcheck)
    parsed = [line.split(" ", 2) for line in events if line.count(" ") >= 2]
    died = [int(t) for t, cid, action in parsed if action == "die" and cid == beat_before]
    began = [int(t) for t, cid, action in parsed if action == "start" and cid == beat_after]
    assert beat_after != beat_before and died and began and max(died) <= min(began), events
    print(restart.report(f"rolling restart of 3 replicas, worker and beat ({restart_seconds:.0f} s with warm-up)"))
    assert result.returncode == 0, result.stdout[-4000:]
    restart.assert_clean()
    line = audit(host)[-1]
    assert line["replaced"] == ["api-1", "api-2", "api-3", "worker", "beat"] and line["result"] == "ok", line
    print(f"--- drains: {line['drains']}")

    with traffic() as release:
        result = run_playbook(APP, roll_vars(app_image=f"{IMAGE}:0.1.1"), strategy=LINEAR)
    print(release.report("release 0.1.0 -> 0.1.1"))
    assert result.returncode == 0, result.stdout[-4000:]
    release.assert_clean()
    assert set(images(host).values()) == {f"{IMAGE}:0.1.1"}
    assert json.loads(host.file(f"{ROOT}/release.json").content_string)["release"]["version"] == "0.1.1"
    line = audit(host)[-1]
    assert (line["from"], line["to"], line["result"]) == ("0.1.0", "0.1.1", "ok"), line


def test_two_releases_at_once_never_interleave(host):
    """A release started while a rollback runs fails at once on the lock, having changed nothing; the
    rollback goes on and returns to the release before 0.1.1. (A release that never gets ready,
    returned under load, and a stale lock taken over: molecule/multihost, across two app hosts.)"""
    lines_before = len(audit(host))
    results = {}
    thread = threading.Thread(target=lambda: results.update(first=run_playbook(ROLLBACK, roll_vars(), strategy=LINEAR)))
    thread.start()
    wait_for(lambda: "token" in in_vm(f"cat {ROOT}/.deploy.lock 2>/dev/null || true"), timeout=120,
             what="the first run to take the lock")
    second = run_playbook(APP, roll_vars(app_image=f"{IMAGE}:0.1.1"), strategy=MITOGEN)
    thread.join()
    out = " ".join(second.stdout.split())
    assert second.returncode != 0 and "is being deployed by another run, nothing was changed" in out, out[-3000:]
    assert '"play": "Return the app to its previous release"' in out, out[-3000:]
    assert recap(second)["stack-trixie"]["changed"] == 0
    assert results["first"].returncode == 0, results["first"].stdout[-3000:]
    lines = audit(host)[lines_before:]
    assert [line["play"] for line in lines] == ["Return the app to its previous release"], lines
    assert (lines[0]["from"], lines[0]["to"], lines[0]["result"]) == ("0.1.1", "0.1.0", "ok"), lines
    assert host.run(f"test -e {ROOT}/.deploy.lock").rc != 0, "the lock was not given back"
    assert set(images(host).values()) == {f"{IMAGE}:0.1.0"}
    releases = {f: json.loads(host.file(f"{ROOT}/{f}").content_string)["release"]["version"]
                for f in ("release.json", "release.previous.json")}
    assert releases == {"release.json": "0.1.0", "release.previous.json": "0.1.1"}, releases
    assert healthy(host)


def test_benchmark_release_time_by_replicas(host):
    """A code-only release (0.1.0 <-> 0.1.1) without load, so no drain waits, with 1, 3 and 6 replicas
    (VMSTACK_BENCH=1; figures in docs/benchmarks.md): the play's time and each process's replacement
    (drain, stop, start, gate, put back) as the audit line records them, side by side in one run."""
    if os.environ.get("VMSTACK_BENCH") != "1":
        pytest.skip("a benchmark: VMSTACK_BENCH=1")
    rows = []
    for replicas in (1, 3, 6):
        more = {"app_api_replicas": replicas, "app_image": f"{IMAGE}:0.1.0"}
        assert run_playbook(DEPLOY, roll_vars(**more), args=["--tags", "app,nginx"], strategy=MITOGEN).returncode == 0
        for image in ("0.1.1", "0.1.0"):
            started = time.monotonic()
            result = run_playbook(APP, roll_vars(**{**more, "app_image": f"{IMAGE}:{image}"}), strategy=LINEAR)
            seconds = time.monotonic() - started
            assert result.returncode == 0, result.stdout[-3000:]
            line = audit(host)[-1]
            api = [v for k, v in line["replace_seconds"].items() if k.startswith("api-")]
            rows.append((replicas, image, round(seconds, 1), line["seconds"], round(sum(api), 1),
                         max(api), line["replace_seconds"].get("worker"), line["replace_seconds"].get("beat")))
    print("\n--- replicas, to, play s, role s (lock to lock), API replacements s, slowest API s, worker s, beat s")
    for row in rows:
        print("--- " + " | ".join(str(v) for v in row))


# Last, so the log it reads holds every run of this module.
def test_secrets_appear_nowhere_but_their_files(host):
    inspect = host.check_output("docker inspect $(docker ps -aq)")
    files = host.check_output(f"cat {ROOT}/compose.yaml {ROOT}/app.env {ROOT}/release.json /etc/nginx/vmstack/*.conf")
    # Every process's environment but PostgreSQL's: the postgres image's
    # entrypoint (the official one, and the fixture that mimics it) exports
    # POSTGRES_PASSWORD from its _FILE to the server it starts.
    postgres = set(host.check_output("docker top agent-postgres -eo pid").split()[1:])
    pids = [p for p in host.check_output("ls /proc | grep -E '^[0-9]+$'").split() if p not in postgres]
    environ = host.check_output(f"cd /proc && cat {' '.join(f'{p}/environ' for p in pids)} 2>/dev/null "
                                "| tr '\\0' '\\n' || true")
    log = ansible_log()
    assert "vmstack.deploy.app : Write the secret files" in log
    rotated = {f"rotated {k}": v for k, v in ROTATED.items() if isinstance(v, str)}
    rotated.update({f"rotated {k}": v for k, v in ROTATED.get("app_extra_secrets", {}).items()})
    refused = {"the rolled-back release's key": REFUSED_KEY, "its database password": REFUSED_PG_PASSWORD}
    for name, value in {**SECRETS, **rotated, **refused}.items():
        assert value not in inspect, f"{name} in docker inspect"
        assert value not in files, f"{name} in the project or nginx files"
        assert value not in environ, f"{name} in a process environment"
        assert value not in log, f"{name} in the Ansible log"
