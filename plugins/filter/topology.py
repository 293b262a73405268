# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""Filters that derive proxy settings from the inventory (playbooks/nginx.yml)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - outside Ansible
    AnsibleFilterError = ValueError

DOCUMENTATION = r"""
name: api_upstreams
short_description: Every API replica of the app hosts, as host:port for the load balancer
version_added: 0.2.0
description:
  - For each app host, the ports its API replicas are published on (C(app_api_ports), else C(app_api_replicas)
    ports from C(app_api_port_base), with the app role's defaults) on the address the load balancer reaches them at.
  - On the load balancer's own host that is loopback; on another host it is C(app_api_bind_address) when that is a
    concrete address, else C(vmstack_private_address), else C(ansible_host), else the host's name.
  - "A remote app host whose API is published on loopback only cannot be reached: that is an error naming the host."
options:
  _input:
    description: The app hosts (C(groups['app'])).
    type: list
    elements: str
    required: true
  hostvars:
    description: C(hostvars).
    type: dict
    required: true
  lb_host:
    description: The load balancer host (C(inventory_hostname) in the lb play).
    type: str
    required: true
"""

EXAMPLES = r"""
nginx_sites:
  - name: agent
    server_names: [api.example.com]
    upstreams: "{{ groups['app'] | vmstack.deploy.api_upstreams(hostvars, inventory_hostname) }}"
    tls_source: acme
"""

RETURN = r"""
_value:
  description: C(address:port) of every replica, app hosts in inventory order.
  type: list
  elements: str
"""

_APP_DEFAULTS = Path(__file__).resolve().parents[2] / "roles" / "app" / "defaults" / "main.yml"


def _app_defaults() -> dict:
    with _APP_DEFAULTS.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _is_loopback_or_any(address: str) -> bool:
    if address in ("", "0.0.0.0", "::", "localhost"):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def api_upstreams(app_hosts, hostvars, lb_host):
    """address:port of every API replica of every app host, as lb_host reaches it."""
    defaults = _app_defaults()
    upstreams = []
    for host in app_hosts or []:
        hv = hostvars[host]
        ports = list(hv.get("app_api_ports") or [])
        if not ports:
            base = int(hv.get("app_api_port_base", defaults["app_api_port_base"]))
            replicas = int(hv.get("app_api_replicas", defaults["app_api_replicas"]))
            ports = list(range(base, base + replicas))
        bind = str(hv.get("app_api_bind_address", defaults["app_api_bind_address"]))
        if host == lb_host:
            address = "127.0.0.1" if _is_loopback_or_any(bind) else bind
        elif not _is_loopback_or_any(bind):
            address = bind
        elif bind in ("0.0.0.0", "::", ""):
            address = str(hv.get("vmstack_private_address") or hv.get("ansible_host") or host)
        else:
            raise AnsibleFilterError(
                f"api_upstreams: app host {host} publishes its API on {bind} only, which the load balancer "
                f"{lb_host} cannot reach; set app_api_bind_address to {host}'s private address"
            )
        upstreams.extend(_hostport(address, int(port)) for port in ports)
    return upstreams


class FilterModule:
    """Ansible filter plugins."""

    def filters(self):
        return {"api_upstreams": api_upstreams}
