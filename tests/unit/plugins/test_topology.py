"""vmstack.deploy.api_upstreams, private_address and peer_rules: the multi-host layout from the inventory."""

import pytest

from ansible_collections.vmstack.deploy.plugins.filter.topology import FilterModule, api_upstreams, peer_rules, private_address


def test_one_vm_uses_loopback_and_the_app_role_defaults():
    assert api_upstreams(["vm"], {"vm": {}}, "vm") == ["127.0.0.1:8001", "127.0.0.1:8002"]


def test_replicas_and_port_base_per_host():
    hostvars = {"vm": {"app_api_replicas": 3, "app_api_port_base": 9001}}
    assert api_upstreams(["vm"], hostvars, "vm") == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]


def test_explicit_ports_win():
    hostvars = {"vm": {"app_api_ports": [8101, 8105], "app_api_replicas": 5}}
    assert api_upstreams(["vm"], hostvars, "vm") == ["127.0.0.1:8101", "127.0.0.1:8105"]


def test_remote_hosts_on_their_private_addresses():
    hostvars = {
        "lb": {},
        "app1": {"app_api_bind_address": "10.0.0.11"},
        "app2": {"app_api_bind_address": "0.0.0.0", "vmstack_private_address": "10.0.0.12", "ansible_host": "203.0.113.5"},
        "app3": {"app_api_bind_address": "0.0.0.0", "ansible_host": "10.0.0.13", "app_api_replicas": 1},
        "app4": {"app_api_bind_address": "fd00::14", "app_api_replicas": 1},
    }
    assert api_upstreams(["app1", "app2", "app3", "app4"], hostvars, "lb") == [
        "10.0.0.11:8001", "10.0.0.11:8002", "10.0.0.12:8001", "10.0.0.12:8002", "10.0.0.13:8001", "[fd00::14]:8001",
    ]


def test_the_lb_host_itself_is_reached_on_loopback_even_when_also_remote_ones_exist():
    hostvars = {"lb": {"app_api_bind_address": "0.0.0.0"}, "app2": {"app_api_bind_address": "10.0.0.12"}}
    assert api_upstreams(["lb", "app2"], hostvars, "lb")[:2] == ["127.0.0.1:8001", "127.0.0.1:8002"]


def test_a_remote_host_on_loopback_is_an_error_naming_it():
    with pytest.raises(Exception, match="app host app1 publishes its API on 127.0.0.1"):
        api_upstreams(["app1"], {"app1": {}}, "lb")


def test_no_app_hosts_no_upstreams():
    assert api_upstreams([], {}, "lb") == []


def test_registered():
    assert FilterModule().filters()["api_upstreams"] is api_upstreams


def test_private_address_prefers_the_named_private_one():
    hostvars = {"a": {"vmstack_private_address": "10.0.0.5", "ansible_host": "203.0.113.5"},
                "b": {"ansible_host": "10.0.0.6"}, "c": {}, "d": {"ansible_host": "fd00::7"}}
    assert [private_address(h, hostvars) for h in "abc"] == ["10.0.0.5", "10.0.0.6", "c"]
    assert private_address("d", hostvars, brackets=True) == "[fd00::7]"
    assert private_address("a", hostvars, brackets=True) == "10.0.0.5"


LAYOUT_GROUPS = {"all": ["lb", "app1", "app2", "db", "mon"], "lb": ["lb"], "app": ["app1", "app2"], "db": ["db"],
                 "monitoring": ["mon"]}
LAYOUT_HOSTVARS = {"lb": {"ansible_host": "10.0.0.2"}, "app1": {"ansible_host": "10.0.0.11"},
                   "app2": {"ansible_host": "10.0.0.12", "app_api_replicas": 3, "app_worker_enabled": False},
                   "db": {"vmstack_private_address": "10.0.1.20", "ansible_host": "203.0.113.20"},
                   "mon": {"ansible_host": "10.0.0.30"}}


def rules(host, groups=None, hostvars=None):
    found = peer_rules(host, groups or LAYOUT_GROUPS, hostvars or LAYOUT_HOSTVARS)
    assert all(rule["proto"] == "tcp" for rule in found)
    return {rule["name"]: (rule["ports"], rule["sources"]) for rule in found}


def test_the_data_host_admits_postgres_and_redis_from_the_app_hosts_only():
    found = rules("db")
    assert found["PostgreSQL and Redis from the app hosts"] == ([5432, 6379], ["10.0.0.11", "10.0.0.12"])
    assert found["exporters and the app's metrics from the monitoring hosts"] == ([9100, 9121, 9187], ["10.0.0.30"])
    assert len(found) == 2


def test_an_app_host_admits_its_replicas_from_the_load_balancer_and_its_metrics_from_monitoring():
    assert rules("app1") == {
        "API replicas from the load balancers": ([8001, 8002], ["10.0.0.2"]),
        "exporters and the app's metrics from the monitoring hosts": ([8001, 8002, 9100, 9121, 9187, 9540], ["10.0.0.30"]),
    }
    assert rules("app2")["API replicas from the load balancers"] == ([8001, 8002, 8003], ["10.0.0.2"])
    assert 9540 not in rules("app2")["exporters and the app's metrics from the monitoring hosts"][0]


def test_the_load_balancer_admits_its_exporters_and_the_monitoring_host_every_journal():
    assert rules("lb") == {"exporters and the app's metrics from the monitoring hosts": ([9100, 9113], ["10.0.0.30"])}
    assert rules("mon") == {
        "journals from every host": ([19532], ["10.0.0.11", "10.0.0.12", "10.0.0.2", "10.0.1.20"]),
    }


def test_one_vm_in_every_group_needs_no_peer_rules():
    groups = {group: ["vm"] for group in ("all", "lb", "app", "db", "monitoring")}
    assert peer_rules("vm", groups, {"vm": {}}) == []


def test_a_db_host_that_is_also_an_app_host_opens_no_database_port():
    groups = dict(LAYOUT_GROUPS, app=["app1", "db"])
    assert "PostgreSQL and Redis from the app hosts" not in rules("db", groups)


def test_a_peer_reached_by_name_is_admitted_by_its_gathered_address_or_named():
    hostvars = dict(LAYOUT_HOSTVARS, app1={"ansible_host": "app1.example.com",
                                           "ansible_facts": {"default_ipv4": {"address": "10.0.0.41"}}})
    assert rules("db", hostvars=hostvars)["PostgreSQL and Redis from the app hosts"][1] == ["10.0.0.12", "10.0.0.41"]
    hostvars["app1"] = {"ansible_host": "app1.example.com"}
    with pytest.raises(Exception, match="app1 is reached as 'app1.example.com', which is not an IP address"):
        peer_rules("db", LAYOUT_GROUPS, hostvars)


def test_the_other_filters_are_registered():
    filters = FilterModule().filters()
    assert filters["private_address"] is private_address and filters["peer_rules"] is peer_rules
