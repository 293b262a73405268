# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""Filters that derive the multi-host layout from the inventory: the load balancer's upstreams
(playbooks/nginx.yml), a host's private address, and what each host's firewall admits from the
others (playbooks/harden.yml)."""

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

# (private_address and peer_rules, also here, are documented for ansible-doc in private_address.yml and
# peer_rules.yml next to this file)

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


def private_address(host, hostvars, brackets=False):
    """The address other hosts reach host on: vmstack_private_address, else ansible_host, else its name."""
    if not host:
        raise AnsibleFilterError("private_address: no host given")
    hv = hostvars[host] if host in hostvars else {}
    address = str(hv.get("vmstack_private_address") or hv.get("ansible_host") or host)
    return f"[{address}]" if brackets and ":" in address else address


def _peer_ip(peer, hostvars) -> str:
    """A firewall source must be an address: the peer's private address when it is one, else the address
    its gathered facts name (an inventory that reaches hosts by DNS name), else an error naming it."""
    address = private_address(peer, hostvars)
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    hv = hostvars[peer] if peer in hostvars else {}
    facts = hv.get("ansible_facts") or {}
    fact = (facts.get("default_ipv4") or hv.get("ansible_default_ipv4") or {}).get("address")
    if fact:
        return str(fact)
    raise AnsibleFilterError(
        f"peer_rules: {peer} is reached as {address!r}, which is not an IP address, and its facts name none: "
        f"set vmstack_private_address for {peer} to the address the other hosts reach it on"
    )


def _app_ports(hv, defaults) -> list:
    ports = list(hv.get("app_api_ports") or [])
    if not ports:
        base = int(hv.get("app_api_port_base", defaults["app_api_port_base"]))
        replicas = int(hv.get("app_api_replicas", defaults["app_api_replicas"]))
        ports = list(range(base, base + replicas))
    return [int(port) for port in ports]


def peer_rules(host, groups, hostvars):
    """What host's firewall admits from the other hosts of the inventory, one rule per purpose.

    Each rule is {name, proto, ports, sources}: the data host's PostgreSQL and Redis from the app
    hosts, the API replicas from the load balancers, the exporters and the app's metrics from the
    monitoring hosts, and the journal upload port on a monitoring host from every other host. A
    host never lists itself (it reaches itself on loopback, which is always open); a rule without
    sources is left out.
    """
    defaults = _app_defaults()
    hv = hostvars[host]
    lb = list(groups.get("lb") or [])
    app = list(groups.get("app") or [])
    db = list(groups.get("db") or [])
    monitoring = list(groups.get(str(hv.get("monitoring_group", "monitoring"))) or [])

    def sources(hosts):
        return sorted({_peer_ip(peer, hostvars) for peer in hosts if peer != host})

    rules = []
    if host in db and host not in app:
        ports = [int(hv.get("app_postgres_host_port", defaults["app_postgres_host_port"])),
                 int(hv.get("app_redis_host_port", defaults["app_redis_host_port"]))]
        rules.append({"name": "PostgreSQL and Redis from the app hosts", "ports": ports, "sources": sources(app)})
    if host in app:
        rules.append({"name": "API replicas from the load balancers", "ports": _app_ports(hv, defaults),
                      "sources": sources(lb)})
    metrics = [int(hv.get("monitoring_node_exporter_port", 9100))]
    if host in lb:
        metrics.append(int(hv.get("monitoring_nginx_exporter_port", 9113)))
    if host in db or host in app:
        metrics += [int(hv.get("monitoring_postgres_exporter_port", 9187)),
                    int(hv.get("monitoring_redis_exporter_port", 9121))]
    if host in app:
        metrics += _app_ports(hv, defaults)
        if hv.get("app_worker_enabled", defaults["app_worker_enabled"]):
            metrics.append(int(hv.get("app_worker_metrics_port", defaults["app_worker_metrics_port"])))
    rules.append({"name": "exporters and the app's metrics from the monitoring hosts",
                  "ports": sorted(set(metrics)), "sources": sources(monitoring)})
    if host in monitoring:
        rules.append({"name": "journals from every host", "ports": [int(hv.get("monitoring_journal_port", 19532))],
                      "sources": sources(hostvars.keys() if not groups.get("all") else groups["all"])})
    return [dict(rule, proto="tcp", ports=sorted(set(rule["ports"]))) for rule in rules if rule["sources"]]


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
        return {"api_upstreams": api_upstreams, "private_address": private_address, "peer_rules": peer_rules}
