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
    """The client's address as the targets see it: its source address towards
    them (not the first of `hostname -I`, which may be a docker0 bridge)."""
    target = client.check_output("getent ahostsv4 harden-trixie").split()[0]
    return client.check_output(f"ip -4 -o route get {target}").split(" src ")[1].split()[0]
