# Copyright: vmstack.deploy maintainers
# Apache License 2.0 (see LICENSE)
"""Which PostgreSQL database a connection URL names, without its credentials (the app role)."""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import unquote

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: database_id
short_description: The servers, port and name of the database a PostgreSQL URL connects to, without credentials
version_added: 0.2.0
description:
  - Hosts that give the same database in different words (another user or password, other query parameters, a
    host name in other case, the default port left out) get the same ID.
  - "The ID is C(server:port/name); with several servers (libpq's C(host1:port1,host2:port2)) they are sorted and
    joined with commas. The servers and ports may also come from the C(host) (or C(hostaddr)) and C(port) query
    parameters, the name from C(dbname); without a name it is the user's, as libpq does. The URL is read as libpq
    reads it: the credentials end at the first C(@) before any C(/), so a password with C(?) or C(#) in it never
    reaches the ID."
  - "An empty URL, or one that connects to the host itself (a Unix socket: no server, or a C(host) that is a
    directory; C(localhost), loopback and unspecified addresses, C(host.docker.internal)), gives an empty ID, which
    is no database shared with other hosts."
  - "What the URL cannot tell is left to the caller (the app role's C(app_database_id)): one server reached under
    several names (a private and a public address, a local proxy) gets several IDs, and an address that means
    another machine on each host (a Docker bridge's gateway reaching each host's own PostgreSQL) or one database
    whose apps are kept apart by schema or user gets one."
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

_URL = re.compile(r"^(postgres(?:ql)?(?:\+[a-z0-9_]+)?)://(.*)$", re.I | re.S)
_DEFAULT_PORT = "5432"
# A host name, an IP address, or a socket directory.
_HOST = re.compile(r"[a-z0-9_.~-]+|[0-9a-f:.]+|/.*")


def _split(rest: str) -> tuple[str, str, str, dict[str, str]]:
    """(credentials, host list, database, query) of what follows `scheme://`, split as libpq splits it."""
    end = next((i for i, c in enumerate(rest) if c in "@/"), len(rest))
    credentials = ""
    if end < len(rest) and rest[end] == "@":
        credentials, rest = rest[:end], rest[end + 1:]
    hosts, path, query = re.match(r"([^/?]*)(?:/([^?]*))?(?:\?(.*))?\Z", rest, re.S).groups()
    return credentials, hosts, path or "", _query(query or "")


def _query(query: str) -> dict[str, str]:
    """The URL's parameters, percent-decoded (a + stays a +, as in libpq)."""
    params = {}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        params[unquote(key)] = unquote(value)
    return params


def _servers(hostspec: str) -> list[tuple[str, str]]:
    """(host, port) pairs of a comma-separated host list; port empty where none is given."""
    servers = []
    for entry in filter(None, hostspec.split(",")):
        if entry.startswith("["):  # [IPv6]:port
            host, _, rest = entry[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, _, port = entry.partition(":")
        host = unquote(host).lower().rstrip(".")
        try:
            host = ipaddress.ip_address(host).compressed
        except ValueError:
            pass
        servers.append((host, port))
    return servers


def _local(host: str) -> bool:
    """Whether host names the machine itself: a socket directory, localhost, a loopback or unspecified address."""
    if host in ("", "localhost", "host.docker.internal") or host.startswith("/") or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[0-9.]+", host):
            return False
        try:  # the short forms libc accepts: 127.1, 0
            address = ipaddress.ip_address(socket.inet_aton(host))
        except OSError:
            return False
    mapped = getattr(address, "ipv4_mapped", None)
    address = mapped or address
    return address.is_loopback or address.is_unspecified


def database_id(url, name: str = "the database URL") -> str:
    """The ID of the database url connects to: sorted server:port list and database name, no credentials."""
    url = str(url or "").strip()
    if not url:
        return ""
    match = _URL.match(url)
    if not match:
        raise AnsibleFilterError(f"{name} is not a PostgreSQL URL (postgresql://user:password@host:port/database); "
                                 "its value is not shown, as it holds a password")
    credentials, hostspec, path, query = _split(match.group(2))
    servers = _servers(query.get("hostaddr") or query.get("host") or hostspec)
    ports = query["port"].split(",") if query.get("port") else []
    if not all(_HOST.fullmatch(host) and (port == "" or port.isdigit()) for host, port in servers) \
            or not all(port.isdigit() for port in ports) or "@" in path:
        # (a password with an unencoded "/" ends up here: libpq reads what comes before it as a host and
        # port, what follows as the database; so none of it is shown)
        raise AnsibleFilterError(f"{name} is not a PostgreSQL URL that names its servers and ports plainly "
                                 "(host:port, [IPv6]:port); its value is not shown, as it holds a password")
    if not servers or any(_local(host) for host, _ in servers):
        return ""
    if len(ports) == 1:
        ports = ports * len(servers)
    servers = [(host, (ports[i] if i < len(ports) else "") or port or _DEFAULT_PORT)
               for i, (host, port) in enumerate(servers)]
    user = unquote(credentials.partition(":")[0])
    database = query.get("dbname") or unquote(path) or query.get("user") or user
    return ",".join(sorted(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in servers)) + "/" + database


class FilterModule:
    """Ansible filter plugins."""

    def filters(self):
        return {"database_id": database_id}
