"""Helpers shared by the scenarios' testinfra tests.

Import from a scenario's tests/conftest.py. Everything here drives real
components: ansible-playbook against the scenario's instances, docker exec.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]


def run_playbook(playbook: str | Path, extra_vars: dict | None = None, *, args: list[str] | None = None,
                 timeout: int = 900) -> subprocess.CompletedProcess:
    """ansible-playbook PLAYBOOK against the scenario's inventory, as the
    scenario's own steps run it (its ansible.cfg, its log), with extra vars.

    Returns the finished process (stdout and stderr merged) without raising,
    so tests can assert on failures and their messages.
    """
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT_DIR / "tests" / "collections"))
    env["ANSIBLE_CONFIG"] = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "") + "/ansible.cfg"
    env["ANSIBLE_NOCOLOR"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        extra = Path(tmp, "vars.json")
        extra.write_text(json.dumps(extra_vars or {}))
        cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook),
               "-e", f"@{extra}", *(args or [])]
        return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout, check=False)


def run_role(host: str, role: str, role_vars: dict, *, check: bool = False,
             timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `vmstack.deploy.<role>` against one Molecule instance with vars."""
    play = [{
        "name": f"Run {role}",
        "hosts": host,
        "gather_facts": True,
        "become": True,
        "roles": [{"role": f"vmstack.deploy.{role}"}],
    }]
    with tempfile.TemporaryDirectory() as tmp:
        playbook = Path(tmp, "play.yml")
        playbook.write_text(json.dumps(play))
        return run_playbook(playbook, role_vars, args=["--check"] if check else [], timeout=timeout)


def recap(result: subprocess.CompletedProcess) -> dict:
    """host -> {ok, changed, failed, ...} from a finished run's PLAY RECAP."""
    counts = {}
    for line in result.stdout.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            counts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return counts


def ansible_log() -> str:
    """The scenario's Ansible log (ANSIBLE_LOG_PATH) less testinfra's own
    `ansible-inventory --list` dumps: those print the test inventory, not
    anything a role did."""
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "ansible.log")
    with open(path, encoding="utf-8") as handle:
        records = re.split(r"^(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ p=)", handle.read(), flags=re.M)
    return "".join(r for r in records if not re.match(r"[^|]*\| \{\s*\"_meta\"", r))


def wait_for(predicate, timeout: float = 60, interval: float = 1, what: str = "condition"):
    """Poll predicate() until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
