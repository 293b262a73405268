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
    ("postgresql://u@[2001:DB8:0::5]:6432/agent", "[2001:db8::5]:6432/agent"),
    # hostaddr is where libpq connects
    ("postgresql://u@db.example/agent?hostaddr=10.0.0.7", "10.0.0.7:5432/agent"),
    ("postgresql://u@localhost/agent?hostaddr=10.0.0.7", "10.0.0.7:5432/agent"),
    # read as libpq reads it: the credentials end at the first @ before any /, so a password
    # with ? or # never reaches the ID
    ("postgresql://u:pa?ss@db1.example/x", "db1.example:5432/x"),
    ("postgresql://u:pa#zz@db2.example/y", "db2.example:5432/y"),
    # a + in a parameter is a +, as in libpq
    ("postgresql://u@db.example/?dbname=a+b", "db.example:5432/a+b"),
    ("postgresql://u@db.example/?dbname=a%20b", "db.example:5432/a b"),
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
    ("postgresql://u:pw@[0:0:0:0:0:0:0:1]/agent", ""),
    ("postgresql://u:pw@[::ffff:127.0.0.1]/agent", ""),
    ("postgresql://u:pw@127.1/agent", ""),
    ("postgresql://u:pw@0.0.0.0/agent", ""),
    ("postgresql://u:pw@localhost./agent", ""),
    ("postgresql://u:pw@host.docker.internal/agent", ""),
])
def test_database_id(url, expected):
    assert database_id(url) == expected


def test_different_databases_differ():
    ids = {database_id(u) for u in ("postgresql://u@db1.example/agent", "postgresql://u@db2.example/agent",
                                    "postgresql://u@db1.example:6432/agent", "postgresql://u@db1.example/other")}
    assert len(ids) == 4


@pytest.mark.parametrize("url", ["db.example:5432", "host=db.example dbname=agent password=s3cret-9",
                                 "mysql://u:s3cret-9@db.example/agent", "postgresql:db.example/agent",
                                 # an unencoded / in the password: libpq reads "u" as the host, "s3" as its port
                                 "postgresql://u:s3/cret-9@db.example/agent", "postgresql://u:1234/s3cret-9@db.example/agent",
                                 "postgresql://u@db.example:s3cret-9/agent", "postgresql://u@db.example/a?port=s3cret-9"])
def test_not_a_postgresql_url_is_refused_without_showing_it(url):
    with pytest.raises(AnsibleFilterError, match="^app_database_url is not a PostgreSQL URL") as error:
        database_id(url, "app_database_url")
    assert "s3" not in str(error.value) and "db.example" not in str(error.value)


def test_registered():
    assert FilterModule().filters()["database_id"] is database_id
