"""The dependency floors the collection declares are the versions the suite
tests (tests/lowest): galaxy.yml, requirements.yml and meta/runtime.yml must
not promise an older version than the one a scenario runs with."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
LOWEST = ROOT / "tests" / "lowest"


def floor(spec: str) -> str:
    match = re.search(r">=\s*([0-9][0-9.]*)", spec)
    assert match, f"no >= floor in {spec!r}"
    return match.group(1)


def floor_collections() -> dict:
    rows = (line.split() for line in (LOWEST / "collections.txt").read_text().splitlines())
    return {row[0]: row[1] for row in rows if row and not row[0].startswith("#")}


def test_galaxy_floors_are_the_tested_versions():
    declared = yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"]
    assert {name: floor(spec) for name, spec in declared.items()} == floor_collections()


def test_requirements_yml_declares_the_same_ranges_as_galaxy():
    declared = yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"]
    listed = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    assert {c["name"]: c["version"] for c in listed} == declared


def test_requires_ansible_floor_is_the_tested_core():
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    pins = dict(re.findall(r"^([a-z-]+)==(\S+)", (LOWEST / "requirements.txt").read_text(), re.M))
    assert floor(runtime["requires_ansible"]) == pins["ansible-core"]
