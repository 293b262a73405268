# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""Which wanted ports another service already listens on (the app role's Supervisor runtime), and which
programs hold which ports (playbooks/preflight.yml)."""

from __future__ import annotations

import ipaddress
import re

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - outside Ansible
    AnsibleFilterError = ValueError

DOCUMENTATION = r"""
name: port_clashes
short_description: The wanted TCP ports that another user's process listens on, read from C(ss -Hltne)
version_added: 0.3.0
description:
  - Reads the listening TCP sockets as C(ss -H -l -t -n -e) prints them (local address in the fourth column,
    C(uid:N) among the extended fields; root's sockets carry none and count as uid 0).
  - A wanted port clashes when a socket listens on it, on the wanted address, on a wildcard address, or wanted on a
    wildcard address, and its owner is not O(uid) (the app's own processes, which the deploy restarts).
options:
  _input:
    description: The lines C(ss -Hltne) printed.
    type: list
    elements: str
    required: true
  ports:
    description: The ports the app wants.
    type: list
    elements: int
    required: true
  address:
    description: The address the app binds them on.
    type: str
    required: true
  uid:
    description: The app user's uid.
    type: int
    required: true
"""

EXAMPLES = r"""
__clashes: "{{ __ss.stdout_lines | vmstack.deploy.port_clashes(__app_api_ports, app_api_bind_address, app_uid) }}"
"""

RETURN = r"""
_value:
  description: One C({port, address, uid}) per clash, in the order of the wanted ports.
  type: list
  elements: dict
"""

_WILDCARDS = ("*", "0.0.0.0", "::", "[::]")
_UID = re.compile(r"\buid:(\d+)\b")


def _split(local):
    host, sep, port = local.rpartition(":")
    if not sep or not port.isdigit():
        raise AnsibleFilterError(f"port_clashes: cannot read the local address {local!r}")
    host = host.strip("[]").split("%")[0]
    return host or "*", int(port)


def _same_address(listening, wanted):
    if listening in _WILDCARDS or wanted.strip("[]") in _WILDCARDS:
        return True
    try:
        return ipaddress.ip_address(listening) == ipaddress.ip_address(wanted.strip("[]"))
    except ValueError:
        return listening == wanted


def port_clashes(lines, ports, address, uid):
    """Sockets that listen on a wanted port and belong to someone else."""
    sockets = []
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        host, port = _split(fields[3])
        owner = _UID.search(line)
        sockets.append((host, port, int(owner.group(1)) if owner else 0))
    clashes = []
    for wanted in (int(p) for p in ports):
        for host, port, owner in sockets:
            if port == wanted and owner != int(uid) and _same_address(host, address):
                clashes.append({"port": wanted, "address": host, "uid": owner})
                break
    return clashes


def port_holders(lines, ports, allowed=None):
    """{port: sorted program names} for each of `ports` some socket listens on, read from `ss -Hltnp`
    (a socket whose program ss cannot name, e.g. another namespace's, counts as "?"); with `allowed`
    ({port: [program, ...]}), only the other programs, and only the ports some other program holds."""
    wanted = {int(p) for p in ports}
    allowed = {int(port): set(names) for port, names in (allowed or {}).items()}
    holders: dict = {}
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        _, port = _split(fields[3])
        if port in wanted:
            names = set(re.findall(r'\("([^"]+)",pid=', line)) or {"?"}
            holders.setdefault(port, set()).update(names - allowed.get(port, set()))
    return {port: sorted(names) for port, names in sorted(holders.items()) if names}


class FilterModule:
    """Ansible filter plugins."""

    def filters(self):
        return {"port_clashes": port_clashes, "port_holders": port_holders}
