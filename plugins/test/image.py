# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""Jinja tests on container image references, shared by the docker and app roles."""

from __future__ import annotations

import re

DOCUMENTATION = r"""
name: pinned_image
short_description: Is a container image reference pinned to one version?
version_added: 0.2.0
description:
  - True when the reference names a digest (C(name@sha256:...)) or a tag other than C(latest).
  - A registry port (C(registry:5000/app)) is not a tag; a missing tag means C(latest), so it is not pinned.
options:
  _input:
    description: The image reference.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Refuse floating images
  ansible.builtin.assert:
    that: app_image is vmstack.deploy.pinned_image
"""

RETURN = r"""
_value:
  description: Whether the reference is pinned.
  type: bool
"""

# name[:tag][@algo:hex]; the name may start with a registry host[:port].
_REFERENCE = re.compile(
    r"^(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+(?=/))?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}))?$"
)


def _parts(reference):
    if not isinstance(reference, str):
        return None
    match = _REFERENCE.match(reference)
    return match.groupdict() if match else None


def pinned_image(reference) -> bool:
    """True for name@digest or name:tag with a tag other than latest."""
    parts = _parts(reference)
    if parts is None:
        return False
    if parts["digest"]:
        return True
    return bool(parts["tag"]) and parts["tag"] != "latest"


class TestModule:
    """Ansible test plugins."""

    def tests(self):
        return {"pinned_image": pinned_image}
