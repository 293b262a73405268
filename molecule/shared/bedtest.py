"""Helpers shared by the scenarios' testinfra tests.

Import from a scenario's tests/conftest.py. Everything here drives real
components: ansible-playbook against the scenario's instances, docker exec.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]


def run_role(host: str, role: str, role_vars: dict, *, check: bool = False,
             timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `vmstack.deploy.<role>` against one Molecule instance with vars.

    Returns the finished process (stdout and stderr merged) without raising,
    so tests can assert on failures and their messages.
    """
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    play = [{
        "name": f"Run {role}",
        "hosts": host,
        "gather_facts": True,
        "roles": [{"role": f"vmstack.deploy.{role}"}],
    }]
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT_DIR / "tests" / "collections"))
    env["ANSIBLE_CONFIG"] = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "") + "/ansible.cfg"
    env["ANSIBLE_NOCOLOR"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        playbook = Path(tmp, "play.yml")
        playbook.write_text(json.dumps(play))
        extra = Path(tmp, "vars.json")
        extra.write_text(json.dumps(role_vars))
        cmd = ["ansible-playbook", "-i", inventory, str(playbook), "-e", f"@{extra}"]
        if check:
            cmd.append("--check")
        return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout, check=False)


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
