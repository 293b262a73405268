"""vmstack.deploy.migration_host: which host of the play migrates a database."""

import pytest

from ansible_collections.vmstack.deploy.plugins.filter.migration_host import FilterModule, migration_host

SHARED = "postgresql://agent:secret@db.internal:5432/agent"


@pytest.mark.parametrize("play_hosts, hostvars, host, expected", [
    # each host with its own PostgreSQL migrates it itself
    (["a", "b"], {"a": {}, "b": {"app_database_url": ""}}, "b", "b"),
    # a shared managed database: once, from the first host of the play ...
    (["a", "b", "c"], {h: {"app_database_url": SHARED} for h in "abc"}, "c", "a"),
    (["a", "b", "c"], {h: {"app_database_url": SHARED} for h in "abc"}, "a", "a"),
    # ... which --limit (or an earlier failure) may make another one
    (["b", "c"], {h: {"app_database_url": SHARED} for h in "abc"}, "c", "b"),
    # a host with its own database first does not take the shared one's migrations away
    (["own", "b", "c"], {"own": {}, "b": {"app_database_url": SHARED}, "c": {"app_database_url": SHARED}}, "c", "b"),
    # two managed databases: a first host each
    (["a", "b", "c", "d"], {"a": {"app_database_url": SHARED}, "b": {"app_database_url": SHARED + "2"},
                            "c": {"app_database_url": SHARED}, "d": {"app_database_url": SHARED + "2"}}, "d", "b"),
    # not in the play (yet): itself
    ([], {"a": {"app_database_url": SHARED}}, "a", "a"),
])
def test_migration_host(play_hosts, hostvars, host, expected):
    assert migration_host(play_hosts, hostvars, host) == expected



def test_registered():
    assert FilterModule().filters()["migration_host"] is migration_host
