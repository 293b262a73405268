"""vmstack.deploy.compose_recreates: the running services a release replaces."""

from ansible_collections.vmstack.deploy.plugins.filter.rollout import FilterModule, compose_recreates


def action(name, status, what="container"):
    return {"what": what, "id": name, "status": status}


def test_nothing_to_recreate():
    actions = [action("agent-api-1", "Running"), action("agent-redis", "Waiting"), action("agent-redis", "Healthy")]
    assert compose_recreates(actions, "agent-") == []


def test_recreated_services_in_order_each_once():
    # as `docker compose --dry-run up` reports them (2.26): Recreate, then Recreated
    actions = [action("agent-worker", "Recreate"), action("agent-api-2", "Running"), action("agent-api-1", "Recreate"),
               action("agent-worker", "Recreated"), action("agent-api-1", "Recreating")]
    assert compose_recreates(actions, "agent-") == ["worker", "api-1"]


def test_created_started_other_projects_and_other_kinds_are_not_recreated():
    actions = [action("agent-api-3", "Create"), action("agent-api-3", "Created"), action("agent-beat", "Started"),
               action("other-api-1", "Recreate"), action("agent_default", "Recreate", what="network"), {}]
    assert compose_recreates(actions, "agent-") == []


def test_registered():
    assert FilterModule().filters()["compose_recreates"] is compose_recreates
