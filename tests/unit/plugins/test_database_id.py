"""vmstack.deploy.database_id: the database a PostgreSQL URL names, without credentials."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.vmstack.deploy.plugins.filter.database_id import FilterModule, database_id


@pytest.mark.parametrize("url, expected", [
    ("postgresql://ext:pw@10.0.0.5:15432/ext", "10.0.0.5:15432/ext"),
    # the same database in other words: another user and password, options, case, the default port
    ("postgresql://other:pw2@10.0.0.5:15432/ext?sslmode=require", "10.0.0.5:15432/ext"),
    ("postgres://app@DB.Example.com/agent", "db.example.com:5432/agent"),
    ("postgresql+psycopg://app:p%40ss@db.example.com:5432/agent", "db.example.com:5432/agent"),
    # several servers (libpq), in any order; one port for all from the query
    ("postgresql://u@b.example:5433,a.example/agent", "a.example:5432,b.example:5433/agent"),
    ("postgresql://u@/agent?host=b.example,a.example&port=6432", "a.example:6432,b.example:6432/agent"),
    ("postgresql://u@[2001:db8::5]:6432/agent", "[2001:db8::5]:6432/agent"),
    # the name from dbname=, else libpq's default: the user's
    ("postgresql://u@db.example/?dbname=agent", "db.example:5432/agent"),
    ("postgresql://alice:pw@db.example", "db.example:5432/alice"),
    # the host itself: no database shared with other hosts
    ("", ""),
    (None, ""),
    ("postgresql:///agent", ""),
    ("postgresql://u@%2Fvar%2Frun%2Fpostgresql/agent", ""),
    ("postgresql://u@/agent?host=/var/run/postgresql", ""),
    ("postgresql://u:pw@localhost/agent", ""),
    ("postgresql://u:pw@127.0.0.1:5432/agent", ""),
    ("postgresql://u:pw@[::1]/agent", ""),
])
def test_database_id(url, expected):
    assert database_id(url) == expected


def test_different_databases_differ():
    ids = {database_id(u) for u in ("postgresql://u@db1.example/agent", "postgresql://u@db2.example/agent",
                                    "postgresql://u@db1.example:6432/agent", "postgresql://u@db1.example/other")}
    assert len(ids) == 4


@pytest.mark.parametrize("url", ["db.example:5432", "host=db.example dbname=agent password=s3cret-9",
                                 "mysql://u:s3cret-9@db.example/agent", "postgresql:db.example/agent"])
def test_not_a_postgresql_url_is_refused_without_showing_it(url):
    with pytest.raises(AnsibleFilterError, match="^app_database_url is not a PostgreSQL URL") as error:
        database_id(url, "app_database_url")
    assert "s3cret" not in str(error.value) and "db.example" not in str(error.value)


def test_registered():
    assert FilterModule().filters()["database_id"] is database_id
