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


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _no_duplicates(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
    if duplicates:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {duplicates}", node.start_mark)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)
YAML_FILES = sorted(p for p in (Path(__file__).resolve().parents[2]).glob("roles/*/*/*.yml"))


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_no_duplicate_keys(path):
    yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
