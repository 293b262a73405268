"""vmstack.deploy.ssh_lockout_problems: the settings that would lock the operator out, and those that would not."""

import pytest

from ansible_collections.vmstack.deploy.plugins.filter.lockout import FilterModule, ssh_lockout_problems

SAFE = {
    "login_user": "deploy", "login_groups": ["deploy", "sudo"], "controller_address": "198.51.100.7",
    "server_address": "203.0.113.10", "ssh_connection": True, "admin_user": "deploy", "admin_sudo": True,
    "admin_sudo_nopasswd": True, "sudo_granted_to": "deploy", "ssh_port": 22, "listen_addresses": [],
    "host_addresses": ["203.0.113.10", "10.0.0.5"], "firewall_enabled": True, "ssh_sources": [],
    "allow_users": [], "allow_groups": [], "remove_users": [], "extra_options": {},
}


@pytest.mark.parametrize(("change", "expected"), [
    ({"extra_options": {"AllowUsers": "alice"}}, "harden_ssh_extra_options sets AllowUsers"),
    ({"extra_options": {"authenticationmethods": "password"}}, "sets authenticationmethods"),
    ({"ssh_sources": ["10.0.0.0/8"]}, "leaves out 198.51.100.7"),
    ({"listen_addresses": ["192.0.2.99"]}, "192.0.2.99, which this host does not have"),
    ({"listen_addresses": ["10.0.0.5"]}, "leaves out 203.0.113.10, the address this run reaches"),
    ({"listen_addresses": ["[2001:db8::1]:22"], "host_addresses": ["2001:db8::1"]}, "leaves out 203.0.113.10"),
    ({"admin_sudo": False}, "harden_admin_sudo=false would take that away"),
    ({"admin_sudo_nopasswd": False}, "harden_admin_sudo_nopasswd=false"),
    ({"admin_user": "ops"}, "harden_admin_user changes from deploy"),
    ({"remove_users": ["deploy"]}, "would remove deploy"),
    ({"allow_users": ["alice"], "admin_user": "alice", "sudo_granted_to": ""}, "harden_ssh_allow_users leaves out deploy"),
    ({"allow_groups": ["ssh-users"], "admin_user": "alice", "sudo_granted_to": ""}, "has no group of deploy"),
])
def test_refused(change, expected):
    problems = ssh_lockout_problems({**SAFE, **change})
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("change", [
    {},
    {"ssh_sources": ["198.51.100.0/24"]},
    {"ssh_sources": ["2001:db8::/32", "198.51.100.7"]},
    {"listen_addresses": ["203.0.113.10", "10.0.0.5"]},
    {"listen_addresses": ["0.0.0.0"]},
    {"listen_addresses": ["203.0.113.10:22"]},
    {"extra_options": {"PermitTunnel": "no", "MaxAuthTries": 2}},
    {"allow_groups": ["ssh-users"]},                 # the role adds the admin user to them
    {"allow_users": ["deploy", "alice"]},
    # not over SSH (docker exec, a console): nothing of the connection to protect
    {"ssh_connection": False, "ssh_sources": ["10.0.0.0/8"], "admin_sudo": False},
    # root logs in (a first run on a fresh cloud VM): no sudo rule to keep
    {"login_user": "root", "admin_sudo": False, "admin_user": "deploy", "sudo_granted_to": ""},
    # a new admin user while connecting as the cloud image's default one: its sudo is not the role's
    {"login_user": "debian", "admin_user": "deploy", "sudo_granted_to": ""},
])
def test_allowed(change):
    assert ssh_lockout_problems({**SAFE, **change}) == []


def test_registered():
    assert FilterModule().filters()["ssh_lockout_problems"] is ssh_lockout_problems
