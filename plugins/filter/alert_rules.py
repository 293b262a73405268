# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""The collection's alert rules adjusted by an operator's variables (the monitoring role)."""

from __future__ import annotations

import re

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - outside Ansible
    AnsibleFilterError = ValueError

DOCUMENTATION = r"""
name: alert_rules
short_description: Prometheus rule groups with alerts turned off, C(for) windows replaced or capped
version_added: 0.4.0
description:
  - Takes a Prometheus rule file's data (C(groups)) and returns a copy where the alerts named in O(disabled) are
    removed, each alert named in O(for) gets that C(for) window, and every C(for) window longer than O(max_for) is
    cut to it (short windows for a staging host or a test). Unknown alert names are an error, so a typo does not
    silently leave an alert as it was.
options:
  _input:
    description: The rule file's data.
    type: dict
    required: true
  for:
    description: Alert name to its C(for) window (a Prometheus duration such as C(30s), C(5m), C(1h30m)).
    type: dict
    default: {}
  max_for:
    description: The longest C(for) window of any alert; empty for no limit.
    type: str
    default: ""
  disabled:
    description: Names of alerts to leave out.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Render the rules with short windows
  ansible.builtin.copy:
    content: "{{ lookup('ansible.builtin.file', 'alerts.yml') | from_yaml
                 | vmstack.deploy.alert_rules(max_for='10s', disabled=['Watchdog']) | to_nice_yaml }}"
    dest: /etc/prometheus/rules/vmstack.yml
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The adjusted rule file's data.
  type: dict
"""

_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def duration_seconds(value):
    """Seconds of a Prometheus duration ('1h30m' -> 5400)."""
    match = _DURATION.match(str(value).strip())
    if not str(value).strip() or not match:
        raise AnsibleFilterError(f"alert_rules: {value!r} is not a Prometheus duration (such as 30s, 5m, 1h30m)")
    return sum(int(n) * unit for n, unit in zip(match.groups(), _UNITS) if n)


def alert_rules(data, **options):
    windows = options.get("for") or {}
    max_for = options.get("max_for") or ""
    disabled = set(options.get("disabled") or [])
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise AnsibleFilterError("alert_rules: the input is not a rule file (no groups list)")
    names = {r["alert"] for g in data["groups"] for r in g.get("rules", []) if "alert" in r}
    unknown = sorted((set(windows) | disabled) - names)
    if unknown:
        raise AnsibleFilterError(f"alert_rules: no such alert: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    for window in windows.values():
        duration_seconds(window)
    limit = duration_seconds(max_for) if max_for else None
    # New dicts for what changes, the rest shared: the input is never changed. (No deepcopy:
    # under Ansible the data's strings are tagged objects, and copying them all took seconds a run.)
    groups = []
    for group in data["groups"]:
        kept = []
        for rule in group.get("rules", []):
            name = rule.get("alert")
            if name in disabled:
                continue
            rule = dict(rule)
            if name in windows:
                rule["for"] = str(windows[name])
            if limit is not None and name and duration_seconds(rule.get("for", "0s")) > limit:
                rule["for"] = str(max_for)
            kept.append(rule)
        if kept:
            groups.append({**group, "rules": kept})
    return {**data, "groups": groups}


class FilterModule:
    def filters(self):
        return {"alert_rules": alert_rules}
