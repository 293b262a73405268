"""Every role has a README.md, and every variable of the role that a README
names exists: a token that starts with the role's prefix (`harden_`,
`nginx_`, `app_`, ...: the role's name and `_`, as test_argument_specs.py
requires of every default) must be an option of one of the role's entry
points in meta/argument_specs.yml (`main`, and e.g. the app role's `check`
and `data`, the backup role's `restore`). A README cannot name a variable
that was renamed or never existed. The same holds for the other roles'
variables a README names (their prefixes, their specs).

The role's tags share the prefix (`app_config`, `nginx_tls`): a token that
is a tag of one of the role's task files is accepted too (so a README
cannot name a tag the role does not have either).

A token is `\\b<prefix>[a-z0-9_]+\\b`. Not variables, and left out:

- file names: a token followed by `.` and a letter or digit (`app_check.yml`);
- a token inside a dotted or a slashed name: preceded by `.` or `/`, or
  followed by `/` (`community.docker.docker_compose_v2`, a module; a path
  component);
- a token ending in `_`: a family of variables written with a wildcard
  (`harden_ssh_*`), not one name.

Tokens inside another word (`vmstack_backup_last_exit_status`, a metric)
never match: `\\b` does not fall between `_` and a letter. Nothing else is
excluded, so a module name written without its FQCN (`docker_login`) fails
the test: write it in full (`community.docker.docker_login`).
"""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())


def options(role: Path) -> set:
    """The option names of every entry point of the role."""
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    return {name for entry in specs.values() for name in (entry.get("options") or {})}


def tags(role: Path) -> set:
    """Every tag set in the role's task files."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            value = node.get("tags")
            found.update([value] if isinstance(value, str) else value if isinstance(value, list) else [])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    for path in (role / "tasks").rglob("*.yml"):
        walk(yaml.safe_load(path.read_text()))
    return found


def named_variables(text: str, prefix: str) -> set:
    """The tokens of text that name a variable with prefix (see the module docstring)."""
    token = re.compile(rf"\b{re.escape(prefix)}[a-z0-9_]+\b")
    found = set()
    for match in token.finditer(text):
        name, before, after = match.group(), text[match.start() - 1 : match.start()], text[match.end() :]
        if re.match(r"\.[A-Za-z0-9]", after) or after.startswith("/") or before in (".", "/") or name.endswith("_"):
            continue
        found.add(name)
    return found


@pytest.mark.parametrize(
    ("text", "prefix", "expected"),
    [
        ("`app_image` and app_api_replicas.", "app_", {"app_image", "app_api_replicas"}),
        ("(app_name), `app_config`", "app_", {"app_name", "app_config"}),
        ("playbooks/app_check.yml, app_check.yml, roles/app_x/, /opt/app_y", "app_", set()),
        ("community.docker.docker_compose_v2, after `docker_login`", "docker_", {"docker_login"}),
        ("`harden_ssh_*`, harden_<area>_enabled, vmstack_harden_x, `_daily`", "harden_", set()),
    ],
)
def test_named_variables(text, prefix, expected):
    assert named_variables(text, prefix) == expected


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_a_readme(role):
    assert (role / "README.md").is_file(), f"roles/{role.name}/README.md is missing"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_readme_names_only_variables_that_exist(role):
    """The role's own prefix, and the other roles' too (the app README names
    `monitoring_` variables, the backup README `app_` ones)."""
    readme = role / "README.md"
    if not readme.is_file():
        pytest.skip("no README (test_role_has_a_readme fails)")
    text = readme.read_text()
    unknown = {
        other.name: sorted(named_variables(text, other.name + "_") - options(other) - tags(other)) for other in ROLES
    }
    unknown = {name: tokens for name, tokens in unknown.items() if tokens}
    assert unknown == {}, (
        f"roles/{role.name}/README.md names variables that are neither options in that role's "
        "meta/argument_specs.yml nor its tags"
    )
