import os
import sys
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

CLIENT = "harden-client"


@pytest.fixture(scope="session")
def client(request):
    """The "internet": a third instance on the targets' network."""
    inventory = request.config.option.ansible_inventory or os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{CLIENT}", ansible_inventory=inventory)


@pytest.fixture(scope="session")
def client_ip(client):
    return client.check_output("hostname -I").split()[0]
