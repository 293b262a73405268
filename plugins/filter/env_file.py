# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""The settings of an env file (the app role's app.env) as a mapping (the Supervisor runtime)."""

from __future__ import annotations

import re

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - outside Ansible
    AnsibleFilterError = ValueError

DOCUMENTATION = r"""
name: env_file
short_description: The settings of an env file, as a mapping
version_added: 0.3.0
description:
  - Reads text in the env-file form Compose's C(env_file) reads without interpolation, one C(NAME=value) per line;
    blank lines and lines starting with C(#) are skipped, the value is everything after the first C(=), kept as it is.
  - A line that is not a setting (no C(=), or a name that is not C([A-Za-z_][A-Za-z0-9_]*)) is an error naming its
    line number, never its content (a value may be a secret).
  - A name given twice keeps its last value, as Compose does.
options:
  _input:
    description: The file's text.
    type: str
    required: true
"""

EXAMPLES = r"""
environment: "{{ lookup('ansible.builtin.template', 'app.env.j2') | vmstack.deploy.env_file }}"
"""

RETURN = r"""
_value:
  description: Name to value, in the order of the file.
  type: dict
"""

_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def env_file(text):
    """NAME=value lines of ``text`` as a dict."""
    if not isinstance(text, str):
        raise AnsibleFilterError(f"env_file: expected the text of an env file, got {type(text).__name__}")
    settings = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise AnsibleFilterError(f"env_file: line {number} is not NAME=value")
        settings.pop(match.group(1), None)
        settings[match.group(1)] = match.group(2)
    return settings


class FilterModule:
    """Ansible filter plugins."""

    def filters(self):
        return {"env_file": env_file}
