# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""Which app host of the play runs a database's schema migrations (the app role)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: migration_host
short_description: The one host of the play that runs a database's schema migrations
version_added: 0.2.0
description:
  - "Each host says which database it migrates in the fact C(__app_database_id) (the app role sets it from the
    host's own variables, role parameters included): empty for a host that runs its own PostgreSQL, the managed
    database's servers, port and name for a managed one (the filter C(vmstack.deploy.database_id), or
    C(app_database_id))."
  - Hosts that run their own PostgreSQL each migrate their own database.
  - Hosts that share a managed database (the same ID) migrate it once, from the first of them in the play; the others
    wait for that result and stop their release when it failed.
  - Hosts on different managed databases each have their own first host. A host with its own database never takes
    a shared database's migrations away from the hosts that use it. A host without the fact runs its own.
options:
  _input:
    description: The hosts of the play (C(ansible_play_hosts)), in order.
    type: list
    elements: str
    required: true
  hostvars:
    description: C(hostvars).
    type: dict
    required: true
  host:
    description: The host asking (C(inventory_hostname)).
    type: str
    required: true
"""

EXAMPLES = r"""
__app_migration_host: "{{ ansible_play_hosts | vmstack.deploy.migration_host(hostvars, inventory_hostname) }}"
"""

RETURN = r"""
_value:
  description: The first host of the play that migrates the same database as O(host); O(host) itself when none.
  type: str
"""


def _database(hostvars, host):
    database = str(hostvars[host].get("__app_database_id") or "")
    return ("managed", database) if database else ("own", host)


def migration_host(play_hosts, hostvars, host):
    """The first host in play_hosts that migrates the same database as host (host itself when it runs its own)."""
    mine = _database(hostvars, host)
    for other in play_hosts or []:
        if _database(hostvars, other) == mine:
            return other
    return host


class FilterModule:
    """Ansible filter plugins."""

    def filters(self):
        return {"migration_host": migration_host}
