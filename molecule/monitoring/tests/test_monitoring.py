"""Monitoring proven on the running stack: targets, faults delivered as alerts, every panel with data.

Commands run in the VM containers with `docker exec` (mon-prom: Prometheus,
Alertmanager, the blackbox exporter and a webhook receiver; mon-app: the app
stack behind nginx). Alert windows are capped at 5 s by the scenario.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bedtest import PROJECT_DIR, recap, run_playbook
from scenario import (APP, MONITOR_PASSWORD, PROM, SECRETS, SITE, delivered, invoke, query, sh, value,
                      wait_delivered, wait_for)

testinfra_hosts = ["ansible://mon-prom"]


def test_configs_pass_the_daemons_own_checks():
    out = sh(PROM, "promtool check config /etc/prometheus/prometheus.yml"
                   " && promtool check rules /etc/prometheus/rules/vmstack.yml"
                   " && amtool check-config /etc/prometheus/alertmanager.yml"
                   " && prometheus-blackbox-exporter --config.check --config.file=/etc/prometheus/blackbox.yml 2>&1")
    print(out)
    assert "SUCCESS" in out


def test_every_target_is_up():
    wanted = {("node", "mon-app"), ("node", "mon-prom"), ("nginx", "mon-app"), ("postgres", "mon-app"),
              ("redis", "mon-app"), ("vmstack-api", "api-1"), ("vmstack-api", "api-2"),
              ("vmstack-worker", "mon-app"), ("prometheus", "mon-prom"), ("alertmanager", "mon-prom"),
              ("blackbox", "mon-prom"), ("blackbox-https", f"{SITE}/ready")}

    def targets():
        active = json.loads(sh(PROM, "curl -sf http://127.0.0.1:9090/api/v1/targets"))["data"]["activeTargets"]
        return {(t["labels"]["job"], t["labels"].get("replica") or t["labels"].get("host")
                 or t["labels"]["instance"]): t["health"] for t in active}

    seen = wait_for(lambda: (lambda t: t if all(t.get(w) == "up" for w in wanted) else None)(targets()), 90)
    seen = seen or targets()
    for (job, who), health in sorted(seen.items()):
        print(f"{job:16} {who:40} {health}")
    assert {w: seen.get(w) for w in wanted} == {w: "up" for w in wanted}


def test_one_scrape_counts_every_worker_of_every_replica():
    """40 runs through nginx: the API counter grows by exactly 40 (2 replicas x 2 uvicorn workers)."""
    expr = 'sum(http_requests_total{job="vmstack-api",route="/v1/agent/invoke",status="200"})'
    before = value(expr)
    codes = invoke([f"what is {i} + {i} (counter {time.time()})" for i in range(40)])
    assert codes == ["200"] * 40
    after = wait_for(lambda: (lambda v: v if v >= before + 40 else None)(value(expr)), 30) or value(expr)
    print(f"invoke requests counted: {before:.0f} -> {after:.0f}")
    assert after - before == 40


def test_faults_reach_the_receiver_and_resolve():
    """Each fault the alerts name, injected on the real stack, delivered within 3 minutes; then resolved."""
    now = time.time()
    # A second backup job (its own app label: mon-app's real one is fresh) that last
    # succeeded two days ago, allowed 26 hours; typed as vmstack-backup types them (the
    # node exporter drops a metric whose files disagree on its type).
    stale = {"last_success_timestamp_seconds": f"{now - 2 * 86400:.0f}", "max_age_seconds": 93600,
             "last_exit_status": 0, "duration_seconds": 12.5, "bytes_added": 1048576, "snapshots": 3}
    metrics = "".join(f'# TYPE vmstack_backup_{k} gauge\nvmstack_backup_{k}{{app="legacy"}} {v}\n'
                      for k, v in stale.items())
    sh(APP, "cat > /var/lib/prometheus/node-exporter/vmstack_backup_legacy.prom.tmp && mv "
            "/var/lib/prometheus/node-exporter/vmstack_backup_legacy.prom.tmp "
            "/var/lib/prometheus/node-exporter/vmstack_backup_legacy.prom", stdin=metrics)
    # The LLM provider fails for 20 runs over about 15 s (the 40 before succeeded).
    codes = invoke([f"llm-outage {i} {now}" for i in range(20)], pause=0.75)
    assert set(codes) == {"502"}, codes
    sh(APP, "docker stop agent-api-2 && docker exec agent-probe rm /tmp/healthy")
    # (the certificate and the watchdog fire from the start: since the deploy)
    times = wait_delivered({
        "ApiReplicaDown": (now, {"replica": "api-2"}), "ContainerUnhealthy": (now, {"container": "agent-probe"}),
        "LlmHighErrorRatio": (now, {"app": "agent"}), "BackupTooOld": (now, {"app": "legacy"}),
        "CertificateExpiringSoon": (now - 3600, {"instance": f"{SITE}/ready"}), "Watchdog": (now - 3600, {}),
    }, "firing", 180)

    stopped = time.time()
    sh(APP, "docker stop agent-postgres agent-redis")
    times.update(wait_delivered({"PostgresDown": (stopped, {"host": "mon-app"}),
                                 "RedisDown": (stopped, {"host": "mon-app"})}, "firing", 180))

    restored = time.time()
    sh(APP, "docker start agent-postgres agent-redis agent-api-2 && docker exec agent-probe touch /tmp/healthy")
    resolved = wait_delivered({"ApiReplicaDown": (restored, {"replica": "api-2"}),
                               "ContainerUnhealthy": (restored, {"container": "agent-probe"}),
                               "PostgresDown": (restored, {"host": "mon-app"}),
                               "RedisDown": (restored, {"host": "mon-app"})}, "resolved", 180)

    print("\nalert                     firing after (s)   resolved after (s)   (from the fault / the repair)")
    for name, t in times.items():
        r = resolved.get(name)
        shown = "-" if t is None else "since deploy" if name in ("CertificateExpiringSoon", "Watchdog") else f"{t:8.1f}"
        print(f"{name:25} {shown:>16}   {'' if r is None else f'{r:8.1f}'}")
    assert None not in times.values()
    assert None not in resolved.values()
    # The stack serves again: /ready through nginx.
    assert wait_for(lambda: sh(APP, f"curl -sk -o /dev/null -w '%{{http_code}}' {SITE}/ready", check=False) == "200", 60)


def test_every_dashboard_panel_has_data():
    """Each panel's PromQL evaluated on the Prometheus that scrapes the stack: at least one series."""
    out = subprocess.run([sys.executable, str(PROJECT_DIR / "tests/unit/monitoring/dashboards.py"), "queries",
                          str(PROJECT_DIR / "roles/monitoring/files/dashboards")],
                         capture_output=True, text=True, check=True).stdout
    panels = json.loads(out)
    evaluate = (
        "import json, sys, urllib.parse, urllib.request\n"
        "for p in json.load(sys.stdin):\n"
        "    url = 'http://127.0.0.1:9090/api/v1/query?' + urllib.parse.urlencode({'query': p['expr']})\n"
        "    r = json.load(urllib.request.urlopen(url))\n"
        "    print(json.dumps([p['dashboard'], p['panel'], p['refId'], len(r['data']['result'])]))\n")
    sh(PROM, "cat > /tmp/evaluate-panels.py", stdin=evaluate)
    counts = [json.loads(line) for line in
              sh(PROM, "python3 /tmp/evaluate-panels.py", stdin=json.dumps(panels)).splitlines()]
    for dashboard, panel, ref, n in counts:
        print(f"{dashboard:14} {panel:45} {ref} {n:3} series")
    assert len(counts) == len(panels) > 0
    assert [c for c in counts if c[3] == 0] == []


def test_grafana_provisioning_files_are_in_place():
    listing = sh(PROM, "ls /etc/grafana/provisioning/datasources /etc/grafana/provisioning/dashboards"
                       " /var/lib/grafana/dashboards/vmstack")
    for name in ("vmstack.yml", "service.json", "host.json", "data.json", "nginx.json", "backups.json"):
        assert name in listing
    datasource = sh(PROM, "cat /etc/grafana/provisioning/datasources/vmstack.yml")
    assert "uid: vmstack-prometheus" in datasource and "http://127.0.0.1:9090" in datasource


def test_memory_of_both_vms_under_load():
    """The stack, nginx and monitoring stay within 2 GiB of resident memory under 50 clients."""
    load = subprocess.Popen(["docker", "exec", APP, "hey", "-z", "20s", "-c", "50", f"{SITE}/ready"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(12)
    # Proportional set size: each shared page counted once across the processes
    # that map it (a plain RSS sum counts the Python processes' shared libraries
    # once per process); RSS printed beside it.
    pss = {vm: int(sh(vm, "cat /proc/[0-9]*/smaps_rollup 2>/dev/null | awk '/^Pss:/ {s+=$2} END {print s}'"))
           for vm in (APP, PROM)}
    rss = {vm: int(sh(vm, "ps -eo rss= | awk '{s+=$1} END {print s}'")) for vm in (APP, PROM)}
    summary = load.communicate(timeout=120)[0]
    print(summary[:700])
    for name, kib in (("PSS", pss), ("RSS sum", rss)):
        print(f"{name} under load: {APP} {kib[APP] / 1024:.0f} MiB, {PROM} {kib[PROM] / 1024:.0f} MiB, "
              f"total {sum(kib.values()) / 1024:.0f} MiB")
    assert sum(pss.values()) < 2 * 1024 * 1024


@pytest.mark.parametrize("case, extra_vars, message", [
    ("target without a port", {"monitoring_extra_scrape_configs": [
        {"job_name": "extra", "static_configs": [{"targets": ["db.internal"]}]}]}, "is not host:port"),
    ("invalid receiver", {"monitoring_alert_receivers": [{"name": "ops", "webhook_url": "not a url"}]},
     "monitoring_alert_receivers needs"),
    ("rule with a syntax error", {"monitoring_extra_rule_groups": [
        {"name": "broken", "rules": [{"alert": "Broken", "expr": "up{job=\"node\" == 0"}]}]},
     "failed to validate"),
])
def test_bad_input_fails_and_prometheus_keeps_its_config(case, extra_vars, message):
    files = "/etc/prometheus/prometheus.yml /etc/prometheus/rules/vmstack.yml /etc/prometheus/alertmanager.yml"
    before = sh(PROM, f"sha256sum {files}")
    result = run_playbook(PROJECT_DIR / "playbooks/monitoring.yml", extra_vars, args=["--limit", PROM])
    assert result.returncode != 0, result.stdout[-3000:]
    assert message in result.stdout, result.stdout[-3000:]
    assert sh(PROM, f"sha256sum {files}") == before
    assert value('up{job="prometheus"}') == 1


def test_no_secret_in_the_ansible_log_nor_in_a_vvv_dry_run():
    """-vvv prints every loop item whole: the basic auth passwords and the exporters' must not be in one."""
    with tempfile.TemporaryDirectory() as tmp:
        playbook = Path(tmp, "front-and-monitoring.yml")
        playbook.write_text(json.dumps([{"ansible.builtin.import_playbook": str(PROJECT_DIR / f"playbooks/{p}.yml")}
                                        for p in ("nginx", "monitoring")]))
        result = run_playbook(playbook, args=["--check", "--diff", "-vvv"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert {vm: recap(result)[vm]["changed"] for vm in (APP, PROM)} == {APP: 0, PROM: 0}, result.stdout[-3000:]
    log = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "ansible.log").read_text(errors="replace")
    assert [s for s in SECRETS if s in log or s in result.stdout] == []


def test_a_request_id_is_found_in_the_central_journal():
    """A request through nginx, found by its id on the monitoring host (journalctl over the received journals)."""
    request_id = f"molecule-{time.time_ns()}"
    code = sh(APP, f"curl -sk -o /dev/null -w '%{{http_code}}' -H 'X-Request-ID: {request_id}' {SITE}/ready")
    assert code == "200"
    find = f"journalctl -D /var/log/journal/remote --no-pager -o cat -g {request_id}"
    found = wait_for(lambda: sh(PROM, find, check=False).strip(), 60)
    print(f"$ {find}\n{found}")
    assert request_id in found and '"route": "/ready"' in found


def test_no_secret_in_any_process_environment_or_world_readable_file():
    """The exporters read their passwords from files of their group, never from the environment."""
    for vm in (APP, PROM):
        environ = sh(vm, "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' || true")
        assert [s for s in SECRETS if s in environ] == [], vm
    modes = sh(APP, "stat -c '%a %U:%G %n' /etc/prometheus/postgres-exporter.pass /etc/prometheus/redis-exporter.json")
    assert modes.split("\n")[:2] == ["640 root:prometheus /etc/prometheus/postgres-exporter.pass",
                                     "640 root:prometheus /etc/prometheus/redis-exporter.json"]
    assert value('pg_up{host="mon-app"}') == 1 and value('redis_up{host="mon-app"}') == 1


def test_prometheus_exposed_through_nginx_asks_for_a_user():
    """The `monitor` site: nginx over TLS in front of the monitoring host's Prometheus, basic auth."""
    url = "https://monitor.vmstack.test/api/v1/status/buildinfo"
    codes = [sh(APP, f"curl -sk -o /dev/null -w '%{{http_code}}' {auth} {url}")
             for auth in ("", "-u ops:wrong", "-u nobody:" + MONITOR_PASSWORD, "-u ops:" + MONITOR_PASSWORD)]
    print(f"no user, a wrong password, an unknown user, the right one: {codes}")
    assert codes == ["401", "401", "401", "200"]
    assert sh(APP, "curl -sk -o /dev/null -w '%{http_code}' https://monitor.vmstack.test/nginx-health") == "200"
    line = sh(APP, "stat -c '%a %U:%G' /etc/nginx/vmstack-auth/monitor.htpasswd && cat /etc/nginx/vmstack-auth/monitor.htpasswd")
    assert line.startswith("640 root:www-data\nops:$6$"), line
    assert MONITOR_PASSWORD not in line


def test_a_basic_auth_entry_without_a_password_is_refused_before_nginx_changes():
    before = sh(APP, "sha256sum /etc/nginx/vmstack/sites.conf /etc/nginx/vmstack-auth/monitor.htpasswd")
    site = {"name": "monitor", "server_names": ["monitor.vmstack.test"], "tls_source": "selfsigned",
            "upstreams": ["127.0.0.1:9090"], "basic_auth": [{"user": "ops", "password": ""}]}
    result = run_playbook(PROJECT_DIR / "playbooks/nginx.yml", {"vmstack_sites": [site]}, args=["--limit", APP])
    assert result.returncode != 0, result.stdout[-3000:]
    assert "basic_auth of sites: monitor needs" in result.stdout, result.stdout[-3000:]
    assert sh(APP, "sha256sum /etc/nginx/vmstack/sites.conf /etc/nginx/vmstack-auth/monitor.htpasswd") == before
