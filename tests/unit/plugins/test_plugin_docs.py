"""Every plugin's DOCUMENTATION, EXAMPLES and RETURN are YAML that ansible-doc can read."""

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml

PLUGINS = sorted((Path(__file__).resolve().parents[3] / "plugins").glob("*/*.py"))
BLOCKS = ("DOCUMENTATION", "EXAMPLES", "RETURN")


def blocks(path: Path) -> dict:
    tree = ast.parse(path.read_text())
    return {node.targets[0].id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in BLOCKS}


def provided(path: Path) -> set:
    spec = importlib.util.spec_from_file_location(f"plugin_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if path.parent.name == "filter":
        return set(module.FilterModule().filters())
    return set(module.TestModule().tests())


@pytest.mark.parametrize("path", PLUGINS, ids=[f"{p.parent.name}/{p.name}" for p in PLUGINS])
def test_plugin_documentation_parses(path):
    found = blocks(path)
    assert set(found) == set(BLOCKS), f"{path.name} lacks {set(BLOCKS) - set(found)}"
    doc = yaml.safe_load(found["DOCUMENTATION"])
    assert doc["name"] in provided(path), f"{path.name} documents {doc['name']}, which it does not provide"
    assert all(isinstance(line, str) for line in doc["description"]), "a description line is not text"
    yaml.safe_load(found["EXAMPLES"])
    yaml.safe_load(found["RETURN"])
