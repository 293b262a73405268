# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""Which PostgreSQL database a connection URL names, without its credentials (the app role)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: database_id
short_description: The servers, port and name of the database a PostgreSQL URL connects to, without credentials
version_added: 0.2.0
description:
  - Hosts that give the same database in different words (another user or password, extra query parameters, a
    host name in other case, the default port left out) get the same ID; hosts on different databases never do.
  - "The ID is C(server:port/name); with several servers (libpq's C(host1:port1,host2:port2)) they are sorted and
    joined with commas. The servers and ports may also come from the C(host) and C(port) query parameters, the name
    from C(dbname); without a name it is the user's, as libpq does."
  - An empty URL, or one that connects to the host itself (a Unix socket: no server, or a C(host) that is a
    directory; C(localhost), C(127.0.0.0/8), C(::1)), gives an empty ID, which is no database shared with other
    hosts. Hosts that reach one database through a local proxy say so with the same C(app_database_id).
  - A value that is not a C(postgresql://) or C(postgres://) URL (with an optional C(+driver)) is refused; the
    message does not show it, since it holds a password.
options:
  _input:
    description: The connection URL (C(app_database_url)).
    type: str
    required: true
  name:
    description: What the error message calls the value (the variable it comes from).
    type: str
    default: the database URL
"""

EXAMPLES = r"""
# "db.example.com:5432/agent", whoever connects and with whatever options
__id: "{{ 'postgresql://alice:s3cret@DB.example.com/agent?sslmode=require' | vmstack.deploy.database_id }}"
# an error that names the variable
__app_id: "{{ app_database_url | vmstack.deploy.database_id('app_database_url') }}"
"""

RETURN = r"""
_value:
  description: The database's ID, or an empty string for none or a local one.
  type: str
"""

_SCHEME = re.compile(r"^postgres(ql)?(\+[a-z0-9_]+)?$")
_DEFAULT_PORT = "5432"


def _servers(hostspec: str) -> list[tuple[str, str]]:
    """(host, port) pairs of a URL's comma-separated host list; port empty where none is given."""
    servers = []
    for entry in filter(None, hostspec.split(",")):
        if entry.startswith("["):  # [IPv6]:port
            host, _, rest = entry[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, _, port = entry.partition(":")
        servers.append((unquote(host).lower(), port))
    return servers


def _local(host: str) -> bool:
    """Whether host names the machine itself (a socket directory, localhost, a loopback address)."""
    return host in ("", "localhost", "::1") or host.startswith("/") or re.match(r"^127(\.\d{1,3}){3}$", host) is not None


def database_id(url, name: str = "the database URL") -> str:
    """The ID of the database url connects to: sorted server:port list and database name, no credentials."""
    url = str(url or "").strip()
    if not url:
        return ""
    parts = urlsplit(url)
    if not _SCHEME.match(parts.scheme.lower()) or not url.lower().startswith(parts.scheme.lower() + "://"):
        raise AnsibleFilterError(f"{name} is not a PostgreSQL URL (postgresql://user:password@host:port/database); "
                                 "its value is not shown, as it holds a password")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    servers = _servers(query["host"]) if query.get("host") else _servers(parts.netloc.rpartition("@")[2])
    if not servers or any(_local(host) for host, _ in servers):
        return ""
    ports = query.get("port", "").split(",") if query.get("port") else []
    if len(ports) == 1:
        ports = ports * len(servers)
    servers = [(host, (ports[i] if i < len(ports) else "") or port or _DEFAULT_PORT)
               for i, (host, port) in enumerate(servers)]
    user = unquote(parts.netloc.rpartition("@")[0].partition(":")[0]) if "@" in parts.netloc else ""
    name = query.get("dbname") or unquote(parts.path.lstrip("/")) or query.get("user") or user
    return ",".join(sorted(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in servers)) + "/" + name


class FilterModule:
    """Ansible filter plugins."""

    def filters(self):
        return {"database_id": database_id}
