"""vmstack.deploy.pinned_image: which image references count as pinned."""

import pytest

from ansible_collections.vmstack.deploy.plugins.test.image import TestModule as ImageTests
from ansible_collections.vmstack.deploy.plugins.test.image import pinned_image

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("reference", "pinned"), [
    ("postgres:16-bookworm", True),
    ("registry.example.com/acme/agent-app:0.4.1", True),
    ("registry.example.com:5000/acme/agent-app:0.4.1", True),
    (f"acme/agent-app@{DIGEST}", True),
    (f"acme/agent-app:0.4.1@{DIGEST}", True),
    (f"acme/agent-app:latest@{DIGEST}", True),
    ("app:5000", True),                              # a numeric tag, not a registry port
    ("postgres", False),                             # no tag means latest
    ("postgres:latest", False),
    ("registry.example.com:5000/acme/agent-app", False),  # the port is not a tag
    ("acme/agent-app@sha256:abc", False),            # not a digest
    ("Acme/App:1.0", False),                         # repository names are lower case
    ("", False),
    (None, False),
    (42, False),
])
def test_pinned_image(reference, pinned):
    assert pinned_image(reference) is pinned


def test_registered_as_a_test():
    assert ImageTests().tests()["pinned_image"] is pinned_image
