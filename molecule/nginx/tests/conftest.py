import os
import sys
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))


def _instance(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


@pytest.fixture(scope="session")
def proxy():
    """The nginx host (also runs the app replicas)."""
    return _instance("nginx-trixie")


@pytest.fixture(scope="session")
def client():
    """The second instance: test clients, testssl.sh and the ACME server."""
    return _instance("nginx-client")
