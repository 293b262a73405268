"""vmstack.deploy.migration_host: which host of the play migrates a database."""

import pytest

from ansible_collections.vmstack.deploy.plugins.filter.migration_host import FilterModule, migration_host

SHARED = "10.0.0.5:5432/agent"  # (the role sets vmstack.deploy.database_id of app_database_url)


@pytest.mark.parametrize("play_hosts, hostvars, host, expected", [
    # each host with its own PostgreSQL migrates it itself
    (["a", "b"], {"a": {}, "b": {"__app_database_id": ""}}, "b", "b"),
    # a shared managed database: once, from the first host of the play ...
    (["a", "b", "c"], {h: {"__app_database_id": SHARED} for h in "abc"}, "c", "a"),
    (["a", "b", "c"], {h: {"__app_database_id": SHARED} for h in "abc"}, "a", "a"),
    # ... which --limit (or an earlier failure) may make another one
    (["b", "c"], {h: {"__app_database_id": SHARED} for h in "abc"}, "c", "b"),
    # a host with its own database first does not take the shared one's migrations away
    (["own", "b", "c"], {"own": {}, "b": {"__app_database_id": SHARED}, "c": {"__app_database_id": SHARED}}, "c", "b"),
    # two managed databases: a first host each
    (["a", "b", "c", "d"], {"a": {"__app_database_id": SHARED}, "b": {"__app_database_id": SHARED + "2"},
                            "c": {"__app_database_id": SHARED}, "d": {"__app_database_id": SHARED + "2"}}, "d", "b"),
    # not in the play (yet): itself
    ([], {"a": {"__app_database_id": SHARED}}, "a", "a"),
])
def test_migration_host(play_hosts, hostvars, host, expected):
    assert migration_host(play_hosts, hostvars, host) == expected


def test_registered():
    assert FilterModule().filters()["migration_host"] is migration_host
