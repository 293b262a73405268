# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""Jinja test: does a file found on the host already hold what a task would write?"""

from __future__ import annotations

import hashlib

DOCUMENTATION = r"""
name: file_current
short_description: Does a file on the host already hold this content, mode, owner and group?
version_added: 0.3.0
description:
  - "The input is what M(ansible.builtin.find) returned with O(ansible.builtin.find#module:get_checksum=true):
    the registered result or its C(files) list."
  - "True only when the file at O(path) is among them with the SHA-1 of O(content) (encoded as UTF-8), the
    octal O(mode), and the O(owner) and O(group) (names, or numeric IDs when given as numbers)."
  - "False whenever that cannot be told: the file missing, a symbolic mode, content that is not text. A task
    guarded by C(is not vmstack.deploy.file_current) then runs and decides itself, so the test can only
    save a task's work, never skip a change."
  - "One M(ansible.builtin.find) for all of a role's files and this test on each write replace two module runs
    per file (a remote stat and a file call) on a run with nothing to change."
options:
  _input:
    description: The result of M(ansible.builtin.find) with checksums, or its C(files) list.
    type: raw
    required: true
  path:
    description: The absolute path the task writes.
    type: str
    required: true
  content:
    description: The exact text the task writes (a template rendered with the template lookup, a file's text).
    type: str
    required: true
  mode:
    description: The octal mode the task sets, as a string such as C(0644) or a number.
    type: raw
    required: true
  owner:
    description: The owner the task sets, a name or a numeric ID.
    type: raw
    default: root
  group:
    description: The group the task sets, a name or a numeric ID.
    type: raw
    default: root
"""

EXAMPLES = r"""
- name: Look up the role's files
  ansible.builtin.find:
    paths: [/etc/systemd/journald.conf.d]
    patterns: [90-example.conf]
    get_checksum: true
  register: __found

- name: Configure journald
  ansible.builtin.copy:
    dest: /etc/systemd/journald.conf.d/90-example.conf
    content: "{{ __content }}"
    owner: root
    group: root
    mode: "0644"
  vars:
    __content: "[Journal]\nStorage=persistent\n"
  when: __found is not vmstack.deploy.file_current('/etc/systemd/journald.conf.d/90-example.conf', __content, '0644')
"""

RETURN = r"""
_value:
  description: Whether the file already holds the content with that mode, owner and group.
  type: bool
"""


def _octal(mode):
    if isinstance(mode, bool):
        return None
    if isinstance(mode, int):
        return mode
    if isinstance(mode, str) and mode.isdigit():
        try:
            return int(mode, 8)
        except ValueError:
            return None
    return None


def _same_id(expected, name, number) -> bool:
    if isinstance(expected, bool):
        return False
    if isinstance(expected, int):
        return number == expected
    if isinstance(expected, str):
        return expected.isdigit() and number == int(expected) or name == expected
    return False


def file_current(found, path, content, mode, owner="root", group="root") -> bool:
    """True when `found` (find's result or its files) has `path` with exactly this content and metadata."""
    files = found.get("files") if isinstance(found, dict) else found
    wanted_mode = _octal(mode)
    if not isinstance(files, list) or not isinstance(content, str) or wanted_mode is None:
        return False
    entry = next((f for f in files if isinstance(f, dict) and f.get("path") == path), None)
    try:
        checksum = hashlib.sha1(content.encode("utf-8")).hexdigest()
    except UnicodeEncodeError:
        return False
    if entry is None or entry.get("checksum") != checksum:
        return False
    return (_octal(entry.get("mode")) == wanted_mode
            and _same_id(owner, entry.get("pw_name"), entry.get("uid"))
            and _same_id(group, entry.get("gr_name"), entry.get("gid")))


class TestModule:
    """Ansible test plugins."""

    def tests(self):
        return {"file_current": file_current}
