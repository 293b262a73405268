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
                 strategy: str | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """ansible-playbook PLAYBOOK against the scenario's inventory, as the
    scenario's own steps run it (its ansible.cfg, its log), with extra vars;
    `strategy` overrides the scenario's (e.g. "mitogen_linear", the opt-in
    documented in inventories/example/ansible.cfg).

    Returns the finished process (stdout and stderr merged) without raising,
    so tests can assert on failures and their messages.
    """
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT_DIR / "tests" / "collections"))
    env["ANSIBLE_CONFIG"] = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "") + "/ansible.cfg"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"  # (molecule sets it for its own runs; the outputs here are parsed)
    if strategy:
        env["ANSIBLE_STRATEGY"] = strategy
    if strategy and strategy.startswith("mitogen"):
        # Loaded as inventories/example/ansible.cfg tells operators to: from the installed
        # package's own strategy directory (the role scenarios load it through tests/bed/strategy).
        import ansible_mitogen  # pylint: disable=import-outside-toplevel
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy")
    with tempfile.TemporaryDirectory() as tmp:
        extra = Path(tmp, "vars.json")
        extra.write_text(json.dumps(extra_vars or {}))
        cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook),
               "-e", f"@{extra}", *(args or [])]
        return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)


def role_playbook(directory: Path, role: str, hosts: str) -> Path:
    """A one-play playbook in `directory` that runs `vmstack.deploy.<role>` on `hosts`."""
    playbook = directory / "play.yml"
    playbook.write_text(json.dumps([{"name": f"Run {role}", "hosts": hosts, "gather_facts": True,
                                     "become": True, "roles": [{"role": f"vmstack.deploy.{role}"}]}]))
    return playbook


def run_role(host: str, role: str, role_vars: dict, *, check: bool = False,
             timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `vmstack.deploy.<role>` against one Molecule instance with vars."""
    with tempfile.TemporaryDirectory() as tmp:
        playbook = role_playbook(Path(tmp), role, host)
        return run_playbook(playbook, role_vars, args=["--check"] if check else [], timeout=timeout)


def run_cases(host: str, cases: dict[str, dict], *, role: str | None = None, playbook: str | Path | None = None,
              timeout: int = 600) -> dict[str, str]:
    """Run a role (`vmstack.deploy.<role>`) or a playbook once for several
    inputs that must each be refused, side by side (run_aliases). Returns
    case -> the output Ansible printed for that alias."""
    return run_aliases(host, cases, role=role, playbook=playbook, timeout=timeout)[1]


def run_aliases(host: str, cases: dict[str, dict], *, role: str | None = None, playbook: str | Path | None = None,
                groups: list[str] | None = None, only: list[str] | None = None,
                timeout: int = 600) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """Run a role (`vmstack.deploy.<role>`) or a playbook once for several
    inputs: every case becomes an alias `<host>-<case>` of `host` in a second
    inventory (the same connection and groups, the case's vars as its host
    vars, in the order given), so one ansible-playbook process runs them all
    side by side, as it runs several hosts, instead of one process per case.
    `groups` puts the aliases in these groups instead of the host's; `only`
    runs these cases (`--limit`), the others staying in the inventory.
    Returns the finished run and case -> the output Ansible printed for that
    alias (its task results and its recap line)."""
    import yaml  # (molecule's dependency; only the scenarios import bedtest)

    with open(os.environ["MOLECULE_INVENTORY_FILE"], encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    if groups is None:
        groups = [name for name, group in (inventory["all"].get("children") or {}).items()
                  if host in ((group or {}).get("hosts") or {})]
    connection = dict(inventory["all"]["hosts"][host] or {})
    connection.setdefault("ansible_host", host)
    aliases = {f"{host}-{case}": {**connection, **case_vars} for case, case_vars in cases.items()}
    extra = {"all": {"children": {group: {"hosts": aliases} for group in groups or ["ungrouped"]}}}
    run = [case for case in cases if only is None or case in only]
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "cases.yml").write_text(json.dumps(extra))
        if playbook is None:
            playbook = role_playbook(Path(tmp), role, "all")
        result = run_playbook(playbook, args=["-i", str(Path(tmp, "cases.yml")),
                                              "--limit", ",".join(f"{host}-{case}" for case in run),
                                              "--forks", str(len(run))], timeout=timeout)
    lines = result.stdout.splitlines()
    out = {}
    for case in run:
        alias = re.escape(f"{host}-{case}")
        own, keep = [], False
        for line in lines:
            if re.match(r"^(ok|changed|fatal|failed|skipping|included|TASK|PLAY|RUNNING)\b", line):
                keep = re.search(rf"\[{alias}\]", line) is not None
            if keep or re.match(rf"^{alias}\s+:", line):
                own.append(line)
        out[case] = "\n".join(own)
    return result, out


def recap(result: subprocess.CompletedProcess) -> dict:
    """host -> {ok, changed, failed, ...} from a finished run's PLAY RECAP."""
    counts = {}
    # (colour codes too: molecule forces colour outside CI, and a run it starts inherits that)
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    for line in text.split("PLAY RECAP")[-1].splitlines():
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


def resident_mib(container_id: str) -> int:
    """Resident memory (anonymous, no page cache) of a container's cgroup on the test bed, v1 or v2."""
    for stat in [*Path("/sys/fs/cgroup/memory").glob(f"**/{container_id}/memory.stat"),
                 *Path("/sys/fs/cgroup").glob(f"**/*{container_id}*/memory.stat")]:
        values = dict(line.split() for line in stat.read_text().splitlines())
        if "total_rss" in values:  # cgroup v1
            return int(values["total_rss"]) // 2**20
        if "anon" in values:       # cgroup v2
            return int(values["anon"]) // 2**20
    raise AssertionError(f"no memory cgroup for {container_id}")
