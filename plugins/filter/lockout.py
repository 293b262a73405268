# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""The harden role's lock-out guard: what in a run's SSH and sudo settings would
leave the operator (the user Ansible logs in as, from where it connects) unable
to log in or to become root afterwards."""

from __future__ import annotations

import ipaddress

DOCUMENTATION = r"""
name: ssh_lockout_problems
short_description: Why the SSH and sudo settings of a run would lock the operator out
version_added: 0.2.0
description:
  - Takes the settings the harden role is about to apply and what is known of the running connection, and returns
    one sentence per problem (an empty list when the operator keeps a way in). The role refuses to change anything
    when the list is not empty.
options:
  _input:
    description:
      - A dict with C(login_user), C(login_groups) (list), C(controller_address) and C(server_address) (empty when
        not connected over SSH), C(ssh_connection) (bool), C(admin_user), C(admin_sudo), C(admin_sudo_nopasswd),
        C(sudo_granted_to) (the user the role's sudo drop-in names now, or empty), C(ssh_port), C(listen_addresses),
        C(host_addresses), C(firewall_enabled), C(ssh_sources), C(allow_users), C(allow_groups), C(remove_users),
        C(extra_options).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Refuse settings that would lock the operator out
  ansible.builtin.assert:
    that: __problems | length == 0
    fail_msg: "{{ __problems | join(' ') }}"
  vars:
    __problems: "{{ __settings | vmstack.deploy.ssh_lockout_problems }}"
"""

RETURN = r"""
_value:
  description: One sentence per problem, each naming the variable to change.
  type: list
  elements: str
"""

# sshd keywords the role manages itself: set through harden_ssh_extra_options
# they would bypass these checks (sshd keeps the first value it reads).
MANAGED_KEYWORDS = {
    "port", "listenaddress", "permitrootlogin", "passwordauthentication", "kbdinteractiveauthentication",
    "challengeresponseauthentication", "pubkeyauthentication", "authenticationmethods", "allowusers",
    "allowgroups", "denyusers", "denygroups", "match",
}
WILDCARDS = {"0.0.0.0", "::"}


def _address(value: str) -> str:
    """The address of a ListenAddress entry: host, host:port, [v6] or [v6]:port."""
    value = str(value).strip()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def _covered(address: str, sources) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for source in sources:
        try:
            if ip in ipaddress.ip_network(str(source), strict=False):
                return True
        except ValueError:
            continue
    return False


def ssh_lockout_problems(settings: dict) -> list[str]:
    s = settings or {}
    problems = []
    login, admin = s.get("login_user", ""), s.get("admin_user", "")
    over_ssh = bool(s.get("ssh_connection"))

    managed = sorted(k for k in (s.get("extra_options") or {}) if str(k).lower() in MANAGED_KEYWORDS)
    if managed:
        problems.append(
            f"harden_ssh_extra_options sets {', '.join(managed)}, which the role manages itself and checks against "
            "lock-out; use the dedicated harden_ssh_* variables instead.")

    controller = s.get("controller_address", "")
    sources = s.get("ssh_sources") or []
    if over_ssh and controller and sources and s.get("firewall_enabled") and not _covered(controller, sources):
        problems.append(
            f"harden_firewall_ssh_sources ({', '.join(map(str, sources))}) leaves out {controller}, the address this "
            "run connects from: the firewall would close SSH to it. Add it (or its network) to the list.")

    listen = [_address(a) for a in s.get("listen_addresses") or []]
    if listen and not WILDCARDS.intersection(listen):
        known = {str(a) for a in s.get("host_addresses") or []} | {"127.0.0.1", "::1"}
        missing = [a for a in listen if a not in known]
        if missing:
            problems.append(
                f"harden_ssh_listen_addresses names {', '.join(missing)}, which this host does not have: sshd would "
                "not start on it.")
        server = s.get("server_address", "")
        if over_ssh and server and server not in listen:
            problems.append(
                f"harden_ssh_listen_addresses leaves out {server}, the address this run reaches the host on: the "
                "next connection would be refused. Add it, or 0.0.0.0.")

    if over_ssh and login and login != "root":
        if login == admin and not s.get("admin_sudo", True):
            problems.append(
                f"Ansible logs in as {login} and becomes root through the role's sudo rule: harden_admin_sudo=false "
                "would take that away. Keep it, or connect as another user with sudo.")
        if login == admin and not s.get("admin_sudo_nopasswd", True):
            problems.append(
                f"{login} logs in with a key and has no password the role knows of: with "
                "harden_admin_sudo_nopasswd=false sudo would ask for one. Keep it true, or give the user a password "
                "and Ansible --ask-become-pass first.")
        if s.get("sudo_granted_to") == login and admin != login:
            problems.append(
                f"harden_admin_user changes from {login}, the user this run logs in as, to {admin}: {login} would lose "
                f"its sudo rule. Connect as {admin} (with its key in harden_admin_ssh_keys) for this run, or keep "
                f"harden_admin_user={login}.")
        if login in (s.get("remove_users") or []):
            problems.append(f"harden_remove_users would remove {login}, the user this run logs in as.")
        allow_users = s.get("allow_users") or []
        if allow_users and login not in allow_users:
            problems.append(f"harden_ssh_allow_users leaves out {login}, the user this run logs in as.")
        allow_groups = s.get("allow_groups") or []
        # (the admin user is put in those groups by the role itself)
        if allow_groups and login != admin and not set(allow_groups).intersection(s.get("login_groups") or []):
            problems.append(
                f"harden_ssh_allow_groups ({', '.join(allow_groups)}) has no group of {login}, the user this run "
                "logs in as.")
    return problems


class FilterModule:
    """Ansible filter plugins."""

    def filters(self):
        return {"ssh_lockout_problems": ssh_lockout_problems}
