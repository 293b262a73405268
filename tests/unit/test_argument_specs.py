"""Every role documents every default in meta/argument_specs.yml, and the
documented defaults are the real ones (ansible-core validates input against
the specs before a role runs, so they must not drift)."""

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if p.is_dir())


def load(path: Path):
    return yaml.safe_load(path.read_text()) or {}


def main_options(role: Path) -> dict:
    return load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_specified(role):
    defaults = load(role / "defaults" / "main.yml")
    options = main_options(role)
    assert sorted(set(defaults) - set(options)) == [], "defaults missing from argument_specs"
    assert sorted(set(options) - set(defaults)) == [], "argument_specs options without a default"


def templated(value) -> bool:
    return "{{" in str(value) or "{%" in str(value)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_specified_defaults_match(role):
    """Plain defaults are repeated in the spec. Templated ones are described
    instead: ansible-core templates the whole spec before validating, so a
    default that needs facts or other variables would break validation."""
    defaults = load(role / "defaults" / "main.yml")
    for name, spec in main_options(role).items():
        assert "description" in spec, f"{name}: no description"
        assert "type" in spec, f"{name}: no type"
        if templated(defaults[name]):
            assert "default" not in spec, f"{name}: templated default repeated in the spec"
            assert "Default:" in str(spec["description"]), f"{name}: templated default not described"
        else:
            assert spec.get("default") == defaults[name], f"{name}: spec default differs from defaults/main.yml"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_spec_has_no_templates(role):
    assert not templated((role / "meta" / "argument_specs.yml").read_text())


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_variables_are_prefixed(role):
    prefix = role.name + "_"
    bad = [k for k in load(role / "defaults" / "main.yml") if not k.startswith(prefix)]
    assert bad == []
