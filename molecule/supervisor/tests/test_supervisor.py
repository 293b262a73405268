"""The app under Supervisor (app_runtime: supervisor) on Debian 12 and 13 behind nginx: every
process, real requests through nginx, the worker, crashes, restarts under load, an upgrade and a
rollback by the release link, idempotence by PIDs, a one-program change, bad input."""

import json
import os
import re
import shlex
import shutil
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import testinfra
from bedtest import PROJECT_DIR, ansible_log, run_cases, run_playbook, run_role, wait_for
from loadtest import Traffic

PORTS = [8001, 8002, 8003]
API = [f"agent-api-{n}" for n in (1, 2, 3)]
PROGRAMS = [*API, "agent-worker", "agent-beat"]
SITE = "https://agent.vmstack.test"
SECRETS = ["molecule-secret-key-7c1e9a4b", "molecule-pg-password-3f8d2e61", "molecule-redis-password-b94a07d2",
           "molecule-backup-password-9a4e7c21", "ext-secret-5c2"]


def name(host) -> str:
    return host.backend.get_hostname()


def programs(host) -> dict:
    """program -> (state, pid or None), from `supervisorctl status`."""
    out = host.run("supervisorctl status").stdout
    found = {}
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0].startswith("agent-"):
            pid = re.search(r"pid (\d+)", line)
            found[fields[0]] = (fields[1], int(pid.group(1)) if pid else None)
    return found


def pids(host) -> dict:
    return {program: pid for program, (_, pid) in programs(host).items()}


def all_running(host) -> bool:
    state = programs(host)
    return sorted(state) == sorted(PROGRAMS) and all(s == "RUNNING" for s, _ in state.values())


def get(host, url: str, extra: str = "") -> tuple[int, str]:
    out = host.run(f"curl -sk --max-time 30 -w '\\n%{{http_code}}' {extra} {shlex.quote(url)}").stdout
    body, _, code = out.rpartition("\n")
    return int(code or 0), body


def versions(host) -> set:
    return {json.loads(get(host, f"http://127.0.0.1:{port}/health")[1]).get("version") for port in PORTS}


def hey(host, seconds: int, clients: int, path: str = "/ready", out: str = "/root/hey.txt", rate: int = 0) -> str:
    """Start hey in the background inside the VM against nginx over TLS, for at most `seconds`
    (stop_hey ends it sooner), each client at most `rate` requests a second (0: as fast as it can);
    returns the file its summary goes to."""
    limit = f"-q {rate} " if rate else ""
    host.check_output(f"nohup hey -z {seconds}s -c {clients} {limit}-t 30 {SITE}{path} >{out} 2>&1 &")
    return out


def stop_hey(host) -> None:
    """hey stops on SIGINT and prints its summary."""
    host.run("pkill -INT -x hey")


def hey_result(host, out: str, seconds: int) -> dict:
    """hey's summary: status codes, socket errors (its "Error distribution"), the total."""
    text = wait_for(lambda: (lambda t: t if "Status code distribution" in t or "Error distribution" in t else "")(
        host.run(f"cat {out}").stdout), timeout=seconds + 60, what="hey's summary")
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors = sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]\s", text.partition("Error distribution:")[2], flags=re.M))
    return {"codes": codes, "errors": errors, "total": sum(codes.values()) + errors, "text": text}


# Polls every API port's /health every 50 ms and prints "port seconds version" at each change of
# what it answers (a version, or "down"), with the first answer.
WATCH = """
import json, sys, time, urllib.request
last, t0 = {}, time.monotonic()
while True:
    for port in (8001, 8002, 8003):
        try:
            seen = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1))["version"]
        except Exception:
            seen = "down"
        if last.get(port) != seen:
            last[port] = seen
            print(port, round(time.monotonic() - t0, 2), seen, flush=True)
    time.sleep(0.05)
"""


def gaps(lines: str, version: str) -> dict:
    """port -> seconds between its last answer before `version` and its first answer of `version`."""
    events = [line.split() for line in lines.splitlines() if len(line.split()) == 3]
    found = {}
    for port in {e[0] for e in events}:
        mine = [(float(t), v) for p, t, v in events if p == port]
        first = next((i for i, (_, v) in enumerate(mine) if v == version and i > 0), None)
        if first is not None:
            before = max((t for t, v in mine[:first] if v not in ("down", version)), default=mine[first][0])
            down_from = next((t for t, v in mine[:first] if v == "down" and t >= before), mine[first][0])
            found[int(port)] = round(mine[first][0] - down_from, 2)
    return found


def test_every_process_runs_as_the_app_user_and_is_ready(host):
    assert all_running(host), programs(host)
    for program, (_, pid) in programs(host).items():
        assert host.check_output(f"ps -o user= -p {pid}").strip() == "agent", program
    for port in PORTS:
        assert get(host, f"http://127.0.0.1:{port}/ready")[0] == 200, port
    assert versions(host) == {"0.1.0"}
    assert host.file("/opt/agent/current").linked_to == "/opt/agent/releases/0.1.0"
    # The code: root's, readable by the app's group only, whatever the umask it was installed with.
    assert host.run("find /opt/agent/releases/0.1.0 ! -type l \\( ! -group agent -o -perm /o=rwx -o -perm /g=w \\) | head -3").stdout == ""
    release = json.loads(host.file("/opt/agent/release.json").content_string)["release"]
    assert release["runtime"] == "supervisor" and release["version"] == "0.1.0"
    # Each API process listens on loopback only, on its own port.
    listening = host.check_output("ss -Hltn")
    for port in PORTS:
        assert f"127.0.0.1:{port} " in listening


def test_secrets_are_files_the_processes_read_never_in_their_configuration(host):
    assert host.file("/opt/agent/secrets").mode == 0o700
    secret = host.file("/opt/agent/secrets/database_password")
    assert secret.user == "agent" and secret.mode == 0o400
    assert secret.content_string == SECRETS[1]
    config = host.check_output("cat /etc/supervisor/conf.d/agent-*.conf")
    assert "DATABASE_PASSWORD_FILE=\"/opt/agent/secrets/database_password\"" in config
    log = ansible_log()
    for value in SECRETS:
        assert value not in config
        assert value not in log, "a secret reached the Ansible log"


def test_requests_through_nginx_reach_every_api_process(host):
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    for i in range(30):
        assert get(host, f"{SITE}/health", f"-H 'X-Request-ID: {probe}-{i}'")[0] == 200
    hits = {program: int(host.run(f"grep -c {probe} /var/log/agent/{program[6:]}.log").stdout.strip() or 0)
            for program in API}
    print(f"\n--- {name(host)}: 30 requests through nginx per API process: {hits}")
    assert all(n > 0 for n in hits.values()), hits


def enqueue(host, count: int, label: str) -> list:
    """Queue `count` runs through nginx; their ids."""
    ids = []
    for i in range(count):
        body = json.dumps({"input": f"{label} {i} {uuid.uuid4().hex[:6]}"})
        code, answer = get(host, f"{SITE}/v1/agent/runs",
                           f"-X POST -H 'Content-Type: application/json' -d {shlex.quote(body)}")
        assert code == 202, answer
        ids.append(json.loads(answer)["run_id"])
    return ids


def runs(host, ids: list) -> list:
    return [json.loads(get(host, f"{SITE}/v1/agent/runs/{r}")[1]) for r in ids]


def finished(host, ids: list, timeout: float) -> list:
    return wait_for(lambda: (lambda rs: rs if all(r["status"] in ("succeeded", "failed") for r in rs) else None)(
        runs(host, ids)), timeout=timeout, what=f"{len(ids)} runs to finish")


def assert_processed_once(host, ids: list) -> None:
    processed = host.run("grep -h 'queued run processed' /var/log/agent/worker.log*").stdout
    for r in ids:
        assert processed.count(r) == 1, f"run {r} finished {processed.count(r)} times"


def test_the_worker_executes_a_queued_run(host):
    [run] = finished(host, enqueue(host, 1, "what is 6*7? run"), timeout=60)
    assert run["status"] == "succeeded" and run["attempts"] == 1, run


def test_a_killed_api_process_serves_again_within_seconds_and_nginx_loses_nothing(host):
    before = pids(host)
    out = hey(host, 12, 20, out="/root/hey-kill.txt")
    script = (
        "import os, signal, time, urllib.request\n"
        "time.sleep(3)\n"
        f"os.kill({before['agent-api-2']}, signal.SIGKILL); t0 = time.monotonic()\n"
        "while True:\n"
        "    try:\n"
        "        urllib.request.urlopen('http://127.0.0.1:8002/ready', timeout=1); break\n"
        "    except Exception:\n"
        "        time.sleep(0.05)\n"
        "print(round(time.monotonic() - t0, 2))\n"
    )
    recovered = float(host.check_output(f"python3 -c {shlex.quote(script)}"))
    load = hey_result(host, out, 12)
    after = pids(host)
    print(f"\n--- {name(host)}: kill -9 of agent-api-2: serving again on its port after {recovered} s; "
          f"through nginx meanwhile: {load['total']} requests, codes {load['codes']}, {load['errors']} errors")
    assert after["agent-api-2"] != before["agent-api-2"]
    assert {p: after[p] for p in PROGRAMS if p != "agent-api-2"} == {
        p: before[p] for p in PROGRAMS if p != "agent-api-2"}, "other processes restarted"
    assert recovered < 15
    assert load["errors"] == 0 and set(load["codes"]) == {200}, load["text"][-1500:]


def test_a_killed_worker_loses_no_task_and_runs_it_once(host):
    ids = enqueue(host, 2, "kill test")
    # Both runs held by the worker (concurrency 2), then the worker is killed.
    wait_for(lambda: all(r["status"] == "running" for r in runs(host, ids)), timeout=30, what="both runs running")
    host.check_output("pkill -KILL -u agent -f 'bin/agent-app worker'")
    done = finished(host, ids, timeout=120)
    print(f"\n--- {name(host)}: worker killed -9 holding 2 runs: {[r['status'] for r in done]} after redelivery, "
          f"attempts {[r['attempts'] for r in done]}")
    assert [(r["status"], r["attempts"]) for r in done] == [("succeeded", 2)] * 2, done
    assert_processed_once(host, ids)
    wait_for(lambda: all_running(host), timeout=30, what="every process running")


def test_a_worker_restart_while_ten_long_tasks_run_loses_none(host):
    """A warm shutdown: the runs the worker is on finish, those queued wait for the new worker."""
    ids = enqueue(host, 10, "restart test")
    wait_for(lambda: any(r["status"] == "running" for r in runs(host, ids)), timeout=30, what="a run running")
    restarted = host.run("supervisorctl restart agent-worker")
    assert "started" in restarted.stdout, restarted.stdout + restarted.stderr
    done = finished(host, ids, timeout=180)
    print(f"\n--- {name(host)}: worker restarted while 10 runs of ~4 s were queued or running: "
          f"{[r['status'] for r in done].count('succeeded')} succeeded, attempts {[r['attempts'] for r in done]}")
    # (attempts 1: a run the worker was on finished in its warm shutdown, none waited for a redelivery)
    assert [(r["status"], r["attempts"]) for r in done] == [("succeeded", 1)] * 10, done
    assert_processed_once(host, ids)


HOSTS = ["sv-bookworm", "sv-trixie"]


@pytest.fixture(scope="module")
def host_by_host():
    """Once for both hosts (each host's tests read what it found), as an operator runs the playbooks
    (serial: one host at a time by default): playbooks/app.yml with one setting changed for both and
    bad input on the second only; the same change alone; playbooks/rolling_restart.yml."""
    hosts = {h: testinfra.get_host(f"ansible://{h}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])
             for h in HOSTS}
    found = {"pids": {h: pids(hosts[h]) for h in HOSTS}}

    def run(step: str, playbook: str, extra: dict):
        found[step] = run_playbook(PROJECT_DIR / "playbooks" / playbook, extra)
        found[f"{step}_pids"] = {h: pids(hosts[h]) for h in HOSTS}
        found[f"{step}_audit"] = {h: json.loads(hosts[h].check_output("tail -1 /opt/agent/deploy.log") or "{}")
                                  for h in HOSTS}

    one = {"app_worker_concurrency": 3}
    # (a value only the role's argument spec refuses: the check play applies the spec too)
    run("bad", "app.yml", {**one, "app_log_level": "{{ 'verbose' if inventory_hostname == 'sv-trixie' else 'INFO' }}"})
    run("one", "app.yml", one)
    run("restart", "rolling_restart.yml", one)
    return found


def one_after_the_other(audit: dict) -> None:
    """The second host took its deploy lock only after the first host's run had ended."""
    first, second = (audit[h] for h in HOSTS)
    at = lambda stamp: datetime.fromisoformat(stamp.rstrip("Z"))  # noqa: E731
    assert first["result"] == second["result"] == "ok", (first, second)
    assert at(first["at"]) <= at(second["since"]), (first, second)
    print(f"\n--- host by host: {HOSTS[0]} {first['since']} - {first['at']} ({first['seconds']} s), "
          f"{HOSTS[1]} {second['since']} - {second['at']} ({second['seconds']} s)")


def test_bad_input_on_the_last_host_stops_the_run_before_the_first_host_changes(host, host_by_host):
    """playbooks/app.yml checks every host (playbooks/app_check.yml) before its first batch: going host by host
    alone, the first host would have restarted its worker for the new concurrency before the second's
    input was read."""
    bad = host_by_host["bad"]
    assert bad.returncode != 0
    assert re.search(r"arg spec 'check'.{0,3000}?fatal: \[sv-trixie\].{0,200}?app_log_level", bad.stdout, re.S), \
        bad.stdout[-3000:]
    assert host_by_host["bad_pids"][name(host)] == host_by_host["pids"][name(host)], "a process restarted"
    assert "PLAY [Docker and the app stack]" not in bad.stdout, "a host's release began"


def test_one_setting_restarts_one_program_host_by_host(host, host_by_host):
    """The same change with good input: on each host the worker alone restarts, the second host after the
    first."""
    result = host_by_host["one"]
    assert result.returncode == 0, result.stdout[-3000:]
    before, after = host_by_host["bad_pids"][name(host)], host_by_host["one_pids"][name(host)]
    assert [p for p in PROGRAMS if after[p] != before[p]] == ["agent-worker"], (before, after)
    assert host_by_host["one_audit"][name(host)]["replaced"] == ["worker"]
    one_after_the_other(host_by_host["one_audit"])


def test_a_rolling_restart_restarts_every_process_host_by_host(host, host_by_host):
    """playbooks/rolling_restart.yml: every process of each host restarted (the recorded release: its
    package, pinned NAME==VERSION in release.json), one host at a time."""
    result = host_by_host["restart"]
    assert result.returncode == 0, result.stdout[-3000:]
    before, after = host_by_host["one_pids"][name(host)], host_by_host["restart_pids"][name(host)]
    assert all(after[p] != before[p] for p in PROGRAMS), f"not restarted: {[p for p in PROGRAMS if after[p] == before[p]]}"
    assert result.stdout.count("PLAY [Restart the app one process at a time]") == len(HOSTS), "not one batch a host"
    assert len(host_by_host["restart_audit"][name(host)]["replaced"]) == len(PROGRAMS)
    one_after_the_other(host_by_host["restart_audit"])
    assert versions(host) == {"0.1.0"}


ROTATED = {"app_postgres_password": "rotated-pg-password-2c3d", "app_redis_password": "rotated-redis-password-4e5f"}


def redis(host, password: str) -> str:
    return host.run(f"redis-cli -h 127.0.0.1 -a {password} --no-auth-warning ping").stdout.strip()


def drains(output: str) -> int:
    return len(re.findall(r"^TASK \[[^]]*Drain in nginx api-\d", output, flags=re.M))


def test_an_upgrade_under_load_restarts_one_process_at_a_time_and_fails_no_request(host):
    """A release to a second version, with new PostgreSQL and Redis passwords, while 50 clients (4
    requests a second each) call nginx over TLS and 15 SSE streams of 49 s run: each API process
    drained in nginx until its streams
    end, restarted and gated on /ready, one at a time,
    then the worker and beat; Redis takes its new password without a restart. Then the rollback by
    the release link, the passwords rotated back (below)."""
    if "bookworm" in name(host):
        # The release path is the same tasks on both hosts; under load it costs about 250 s a host, so it
        # runs on Debian 13 only (the suite's budget, docs/benchmarks.md). Debian 12 still installs,
        # restarts one changed program, recovers killed processes and refuses a release that cannot install.
        pytest.skip("the release under load runs on sv-trixie (the suite's budget)")
    base = {"app_worker_concurrency": 3}  # (what the tests above left)
    before = pids(host)
    # (4 requests a second each, 200 in all: unbounded, 50 clients took one of the two cores for the whole
    # release, about 1,000 a second, and slowed the scenario beside this one)
    out = hey(host, 300, 50, out="/root/hey-upgrade.txt", rate=4)
    try:
        redis_pid = host.check_output("pgrep -x redis-server")
        # 15 SSE streams of about 49 s (two 2 s calls, ten tokens 5 s apart) and 5 invoke calls
        # beside hey: each API process is drained until the streams it serves have ended.
        with Traffic(name(host), "agent.vmstack.test", "/etc/nginx/tls/agent/fullchain.pem",
                     short=0, invoke=5, stream=15, warm_up=20) as streams:
            up = run_role(name(host), "app", {**base, "app_package": "agent-app==0.2.0", **ROTATED})
        assert up.returncode == 0, up.stdout[-3000:]
        after = pids(host)
        assert all(after[p] != before[p] for p in PROGRAMS), "a process still runs the old release"
        assert drains(up.stdout) == len(API), "an API process restarted without being drained in nginx"
        assert "down;" not in host.check_output("cat /etc/nginx/vmstack/sites.conf"), "a replica stayed drained"
        assert versions(host) == {"0.2.0"}
        assert host.file("/opt/agent/current").linked_to == "/opt/agent/releases/0.2.0"
        previous = json.loads(host.file("/opt/agent/release.previous.json").content_string)["release"]
        assert previous["version"] == "0.1.0"
        assert redis(host, ROTATED["app_redis_password"]) == "PONG"
        assert redis(host, SECRETS[2]) != "PONG", "Redis still takes the old password"
        assert host.check_output("pgrep -x redis-server") == redis_pid, "Redis restarted for a new password"
        # (the copy module's backups of app.env and the secret files: the old passwords would stay on disk)
        assert not host.run("ls /opt/agent/*~ /opt/agent/secrets/*~").stdout.strip(), "backups left behind"
        assert host.run(f"PGPASSWORD={ROTATED['app_postgres_password']} psql -h 127.0.0.1 -U agent -d agent "
                        "-tAc 'select 1'").stdout.strip() == "1"
        installed = host.check_output("stat -c %Y /opt/agent/releases/0.1.0/.installed")
        host.check_output(f"nohup python3 -c {shlex.quote(WATCH)} >/root/watch.txt 2>&1 &")
        back = run_role(name(host), "app", {**base, "app_package": "agent-app==0.1.0"})
    finally:
        host.run("pkill -f 'urllib.request.urlopen'")
        stop_hey(host)
    assert back.returncode == 0, back.stdout[-3000:]
    assert versions(host) == {"0.1.0"}
    assert host.file("/opt/agent/current").linked_to == "/opt/agent/releases/0.1.0"
    assert host.check_output("stat -c %Y /opt/agent/releases/0.1.0/.installed") == installed, "reinstalled"
    assert redis(host, SECRETS[2]) == "PONG" and redis(host, ROTATED["app_redis_password"]) != "PONG"
    down = gaps(host.check_output("cat /root/watch.txt"), "0.1.0")
    load = hey_result(host, out, 10)
    print(f"\n--- {name(host)}: upgrade 0.1.0 -> 0.2.0 with new passwords ({drains(up.stdout)} API processes drained one at a time, "
          f"then worker and beat) and rollback by the link with the passwords back, under 50 clients: {load['total']} requests through "
          f"nginx, codes {load['codes']}, {load['errors']} errors; each API port's time between its last 0.2.0 "
          f"answer and its first 0.1.0 answer: {down} s")
    print(streams.report(f"{name(host)}: streams and calls through the upgrade"))
    streams.assert_clean(requests=100, invoke_seconds=3, p99_ratio=None)
    assert load["total"] >= 5000
    assert sorted(down) == PORTS, host.check_output("cat /root/watch.txt")
    # The 10 s target is a figure in docs/benchmarks.md (2.6-3.9 s alone; 13.6 s once beside the stack
    # scenario's load tests on two cores): timed asserts on a noisy machine fail for the machine. This
    # bound catches a restart that hangs.
    assert max(down.values()) <= 30
    assert load["errors"] == 0 and set(load["codes"]) == {200}, load["text"][-1500:]


BAD = {
    "no-api": ({"app_api_replicas": 0}, "app_api_replicas >= 1"),
    "missing-dependency": ({"app_package": "agent-app==0.2.0", "app_release_version": "0.2.0-broken",
                            "app_wheelhouse": "/tmp/vmstack-broken-wheelhouse"},
                           "could not be installed"),
    "port-clash": ({"app_api_port_base": 443}, "port 443 is taken by another service"),
}


@pytest.fixture(scope="module")
def bad_runs(host):
    broken = Path("/tmp/vmstack-broken-wheelhouse")
    broken.mkdir(exist_ok=True)
    for wheel in (PROJECT_DIR / "build" / "wheelhouse" / "cp311").glob("agent_app-0.2.0-*.whl"):
        shutil.copy(wheel, broken)
    before = pids(host)
    # (the cases are aliases of the host: they get the group's vars, not the host's)
    tag = {"__python_tag": "cp311" if "bookworm" in name(host) else "cp313"}
    outputs = run_cases(name(host), {case: {**tag, **v} for case, (v, _) in BAD.items()}, role="app")
    return before, outputs


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_before_any_process_stops(host, bad_runs, case):
    before, outputs = bad_runs
    assert BAD[case][1] in outputs[case], outputs[case][-2000:]
    print(f"\n--- {name(host)} {case}: " + re.search(r'"msg": "(.*?)"', outputs[case]).group(1)[:500])
    assert pids(host) == before, "a process was stopped"
    assert versions(host) == {"0.1.0"}
    assert not host.file("/opt/agent/releases/0.2.0-broken").exists

