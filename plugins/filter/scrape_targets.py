# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""What Prometheus scrapes on one host, as file_sd groups per job (the monitoring role)."""

from __future__ import annotations

import ipaddress
import re

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - outside Ansible
    AnsibleFilterError = ValueError

DOCUMENTATION = r"""
name: scrape_targets
short_description: One host's Prometheus targets, grouped by job, for file-based service discovery
version_added: 0.4.0
description:
  - Builds, for one inventory host, the target groups Prometheus reads from a C(file_sd_configs) file - the host's
    exporters, each API replica and the Celery worker - labelled with C(host) (the inventory name), for the app's
    processes C(app) and C(replica), and with C(__job), which the scrape jobs select on (labels starting with two
    underscores are dropped after relabelling).
  - The address to scrape is the host's O(address), except for app processes bound to one specific address, which
    are scraped there. A process bound to loopback can only be scraped by a Prometheus on the same host
    (O(local)); otherwise the filter fails, naming the variable to change.
options:
  _input:
    description: The inventory name of the host.
    type: str
    required: true
  address:
    description: The address Prometheus reaches the host's exporters on (C(127.0.0.1) when it runs there).
    type: str
    required: true
  local:
    description: Whether Prometheus runs on this host.
    type: bool
    required: true
  exporters:
    description: Job name to port of each exporter on the host (C(node), C(nginx), C(postgres), C(redis)).
    type: dict
    required: true
  app:
    description: >-
      The app's processes on the host, or empty: C(name), C(bind_address), C(api_ports) (list), C(worker_port)
      (0: none).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: This host's targets
  ansible.builtin.set_fact:
    targets: >-
      {{ inventory_hostname | vmstack.deploy.scrape_targets(address='10.0.0.5', local=false,
         exporters={'node': 9100}, app={'name': 'agent', 'bind_address': '0.0.0.0', 'api_ports': [8001, 8002],
         'worker_port': 9540}) }}
  # [{'targets': ['10.0.0.5:9100'], 'labels': {'__job': 'node', 'host': 'app1'}},
  #  {'targets': ['10.0.0.5:8001'], 'labels': {'__job': 'vmstack-api', 'host': 'app1', 'app': 'agent',
  #                                            'replica': 'api-1'}}, ...]
"""

RETURN = r"""
_value:
  description: Target groups (C(targets), C(labels)) as a file_sd file lists them.
  type: list
"""

_TARGET = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")


def _port(value, what):
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"scrape_targets: {what} must be a port number, got {value!r}") from None
    if not 0 < port < 65536:
        raise AnsibleFilterError(f"scrape_targets: {what} must be in 1-65535, got {port}")
    return port


def _is_loopback(address):
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _join(address, port):
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def scrape_targets(host, address, local, exporters, app=None):
    if not address:
        raise AnsibleFilterError(f"scrape_targets: no address to scrape {host} on (monitoring_scrape_address)")
    groups = []

    def add(job, target_address, port, what, **labels):
        target = _join(target_address, _port(port, what))
        groups.append({"targets": [target], "labels": {"__job": job, "host": host, **labels}})

    for job, port in sorted((exporters or {}).items()):
        add(job, address, port, f"the {job} exporter's port")
    app = app or {}
    api_ports, worker_port = app.get("api_ports") or [], int(app.get("worker_port") or 0)
    # (a data host publishes the app's endpoints with no API replica and no worker: nothing to scrape there,
    # whatever app_api_bind_address says)
    if not app.get("name") or not (api_ports or worker_port):
        return groups
    bind = app.get("bind_address") or "127.0.0.1"
    if bind in ("0.0.0.0", "::"):
        app_address = address
    elif _is_loopback(bind) and not local:
        raise AnsibleFilterError(
            f"scrape_targets: the app on {host} listens on {bind} only (app_api_bind_address), which a "
            f"Prometheus on another host cannot reach: bind it to the private address it scrapes ({address})"
        )
    else:
        app_address = bind
    for i, port in enumerate(api_ports, start=1):
        add("vmstack-api", app_address, port, "an API replica's port", app=app["name"], replica=f"api-{i}")
    if worker_port:
        add("vmstack-worker", app_address, worker_port, "the worker's metrics port", app=app["name"])
    return groups


def checked_static_configs(configs, what="monitoring_extra_scrape_configs"):
    """Extra scrape jobs an operator adds: each target must be host:port (Prometheus would guess port 80)."""
    problems = []
    for i, config in enumerate(configs or []):
        if not isinstance(config, dict) or not re.match(r"^[a-zA-Z_][a-zA-Z0-9_-]*$", str(config.get("job_name", ""))):
            problems.append(f"item {i}: needs a job_name of [a-zA-Z0-9_-]")
            continue
        for group in config.get("static_configs", []):
            for target in group.get("targets", []):
                if not _TARGET.match(str(target)):
                    problems.append(f"{config['job_name']}: target {target!r} is not host:port")
    if problems:
        raise AnsibleFilterError(f"{what}: " + "; ".join(problems))
    return configs


class FilterModule:
    def filters(self):
        return {"scrape_targets": scrape_targets, "checked_static_configs": checked_static_configs}
