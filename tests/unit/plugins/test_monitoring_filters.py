"""vmstack.deploy.scrape_targets, checked_static_configs and alert_rules: what the monitoring role renders."""

from pathlib import Path

import pytest
import yaml

from ansible_collections.vmstack.deploy.plugins.filter.alert_rules import alert_rules, duration_seconds
from ansible_collections.vmstack.deploy.plugins.filter.scrape_targets import (
    AnsibleFilterError,
    checked_static_configs,
    scrape_targets,
)

ALERTS = yaml.safe_load((Path(__file__).resolve().parents[3] / "roles/monitoring/files/alerts.yml").read_text())
APP = {"name": "agent", "bind_address": "0.0.0.0", "api_ports": [8001, 8002], "worker_port": 9540}


def by_job(groups):
    jobs = {}
    for g in groups:
        jobs.setdefault(g["labels"]["__job"], []).append((g["targets"], {k: v for k, v in g["labels"].items()
                                                                         if k != "__job"}))
    return jobs


def test_every_exporter_replica_and_the_worker_with_host_app_and_replica_labels():
    jobs = by_job(scrape_targets("app1", "10.0.0.5", False, {"node": 9100, "redis": "9121"}, APP))
    assert jobs == {
        "node": [(["10.0.0.5:9100"], {"host": "app1"})],
        "redis": [(["10.0.0.5:9121"], {"host": "app1"})],
        "vmstack-api": [(["10.0.0.5:8001"], {"host": "app1", "app": "agent", "replica": "api-1"}),
                        (["10.0.0.5:8002"], {"host": "app1", "app": "agent", "replica": "api-2"})],
        "vmstack-worker": [(["10.0.0.5:9540"], {"host": "app1", "app": "agent"})],
    }


def test_app_bound_to_one_address_is_scraped_there_and_ipv6_is_bracketed():
    jobs = by_job(scrape_targets("app1", "fd00::5", False, {"node": 9100}, {**APP, "bind_address": "10.1.0.5"}))
    assert jobs["node"][0][0] == ["[fd00::5]:9100"]
    assert jobs["vmstack-api"][0][0] == ["10.1.0.5:8001"]


def test_loopback_app_is_fine_for_a_local_prometheus_only():
    local = by_job(scrape_targets("one", "127.0.0.1", True, {}, {**APP, "bind_address": "127.0.0.1"}))
    assert local["vmstack-api"][1][0] == ["127.0.0.1:8002"]
    with pytest.raises(AnsibleFilterError, match="app_api_bind_address"):
        scrape_targets("app1", "10.0.0.5", False, {}, {**APP, "bind_address": "127.0.0.1"})
    # a data host (PostgreSQL and Redis, no replica, no worker) whose app_api_bind_address stayed at loopback
    data = {**APP, "bind_address": "127.0.0.1", "api_ports": [], "worker_port": 0, "postgres_port": 5432}
    assert by_job(scrape_targets("db1", "10.0.0.7", False, {"node": 9100, "postgres": 9187}, data)) == {
        "node": [(["10.0.0.7:9100"], {"host": "db1"})], "postgres": [(["10.0.0.7:9187"], {"host": "db1"})]}


def test_no_app_no_worker_and_bad_ports():
    assert by_job(scrape_targets("lb1", "10.0.0.2", False, {"node": 9100}, {})) == {
        "node": [(["10.0.0.2:9100"], {"host": "lb1"})]}
    assert "vmstack-worker" not in by_job(scrape_targets("a", "10.0.0.2", False, {}, {**APP, "worker_port": 0}))
    for port in ("", "x", 0, 70000):
        with pytest.raises(AnsibleFilterError, match="port"):
            scrape_targets("a", "10.0.0.2", False, {"node": port}, {})
    with pytest.raises(AnsibleFilterError, match="monitoring_scrape_address"):
        scrape_targets("a", "", False, {"node": 9100}, {})


def test_extra_scrape_configs_need_host_and_port():
    good = [{"job_name": "db", "static_configs": [{"targets": ["db.internal:9187", "[fd00::1]:9100"]}]}]
    assert checked_static_configs(good) == good
    with pytest.raises(AnsibleFilterError, match=r"'db.internal' is not host:port"):
        checked_static_configs([{"job_name": "db", "static_configs": [{"targets": ["db.internal"]}]}])
    with pytest.raises(AnsibleFilterError, match="job_name"):
        checked_static_configs([{"static_configs": []}])


def rule(data, name):
    return next(r for g in data["groups"] for r in g["rules"] if r.get("alert") == name)


def test_alert_windows_replaced_capped_and_alerts_left_out():
    out = alert_rules(ALERTS, **{"for": {"ApiReplicaDown": "30s"}, "max_for": "1m", "disabled": ["Watchdog"]})
    assert rule(out, "ApiReplicaDown")["for"] == "30s"
    assert all(duration_seconds(r.get("for", "0s")) <= 60 for g in out["groups"] for r in g["rules"])
    assert not any(r.get("alert") == "Watchdog" for g in out["groups"] for r in g["rules"])
    assert rule(ALERTS, "DiskWillFillIn24h")["for"] != "1m"  # the input is left as it was
    assert rule(ALERTS, "ApiReplicaDown")["for"] != "30s" and rule(ALERTS, "Watchdog")


def test_unknown_alert_names_and_bad_durations_are_errors():
    with pytest.raises(AnsibleFilterError, match="no such alert: ApiDown"):
        alert_rules(ALERTS, disabled=["ApiDown"])
    with pytest.raises(AnsibleFilterError, match="not a Prometheus duration"):
        alert_rules(ALERTS, max_for="5 minutes")
    with pytest.raises(AnsibleFilterError, match="not a Prometheus duration"):
        alert_rules(ALERTS, **{"for": {"HostDown": "soon"}})
    with pytest.raises(AnsibleFilterError, match="not a rule file"):
        alert_rules({"rules": []})


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("0s", 0)])
def test_durations(text, seconds):
    assert duration_seconds(text) == seconds
