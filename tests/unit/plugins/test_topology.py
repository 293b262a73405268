"""vmstack.deploy.api_upstreams: replicas of the app hosts as the load balancer reaches them."""

import pytest

from ansible_collections.vmstack.deploy.plugins.filter.topology import FilterModule, api_upstreams


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
