# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""Which running Compose services a release has to replace (the app role's rolling release)."""

from __future__ import annotations

import re

DOCUMENTATION = r"""
name: compose_recreates
short_description: The services whose running containers C(docker compose up) would recreate
version_added: 0.3.0
description:
  - "Reads the actions of a dry run of C(docker compose up) (C(community.docker.docker_compose_v2) in check mode,
    C(docker compose --dry-run up)): the containers it would recreate, because their configuration or their
    image changed, as Compose itself decides. (C(docker compose config --hash) cannot tell: it hashes a service
    with an C(env_file) otherwise than C(up) does.)"
  - The app role replaces these one at a time, drained, before C(docker compose up) would recreate them all at once.
  - A container Compose would create (a service new in this release) is not among them.
options:
  _input:
    description: The C(actions) the module returned.
    type: list
    elements: dict
    required: true
  prefix:
    description: What the container names start with before the service (C(<app>-), from C(container_name)).
    type: str
    required: true
"""

EXAMPLES = r"""
__recreates: "{{ dry_run.actions | vmstack.deploy.compose_recreates(app_name ~ '-') }}"
"""

RETURN = r"""
_value:
  description: The services, in the order of their first action, each once.
  type: list
  elements: str
"""

# Compose says "Recreate" and then "Recreated" (older versions "Recreating").
_RECREATE = re.compile(r"^Recreat(e|ed|ing)$")


def compose_recreates(actions, prefix):
    """Services whose container the dry run would recreate."""
    services = []
    for action in actions or []:
        name, status = str(action.get("id") or ""), str(action.get("status") or "")
        if action.get("what") != "container" or not name.startswith(prefix) or not _RECREATE.match(status):
            continue
        if name[len(prefix):] not in services:
            services.append(name[len(prefix):])
    return services


class FilterModule:
    """Ansible filter plugins."""

    def filters(self):
        return {"compose_recreates": compose_recreates}
