"""vmstack.deploy.env_file and port_clashes: what the Supervisor runtime reads from the host and its settings."""

import pytest

from ansible_collections.vmstack.deploy.plugins.filter.env_file import env_file
from ansible_collections.vmstack.deploy.plugins.filter.port_clashes import port_clashes

SS = [
    "LISTEN 0 4096 127.0.0.1:8001 0.0.0.0:* uid:10001 ino:1 sk:1 cgroup:/system.slice/supervisor.service <->",
    "LISTEN 0 511 0.0.0.0:443 0.0.0.0:* ino:2 sk:2 cgroup:/system.slice/nginx.service <->",
    "LISTEN 0 128 127.0.0.1:8003 0.0.0.0:* uid:33 ino:3 sk:3 <->",
    "LISTEN 0 128 [::]:8004 [::]:* ino:4 sk:4 v6only:1 <->",
    "LISTEN 0 128 127.0.0.2:8005 0.0.0.0:* uid:0 ino:5 sk:5 <->",
    "LISTEN 0 128 [::1]:6379 [::]:* uid:104 ino:6 sk:6 <->",
]


def test_settings_in_file_order_with_values_as_they_are():
    text = "# comment\n\nA=1\nB=x = y # not a comment\nEMPTY=\n  # indented comment\nA=2\n"
    assert env_file(text) == {"B": "x = y # not a comment", "EMPTY": "", "A": "2"}
    assert list(env_file(text)) == ["B", "EMPTY", "A"]


@pytest.mark.parametrize("line", ["NOEQUALS-s3cr3t", "1BAD=s3cr3t", "export A=s3cr3t", " A=s3cr3t"])
def test_a_line_that_is_not_a_setting_is_refused_without_its_content(line):
    with pytest.raises(Exception, match="line 2 is not NAME=value") as caught:
        env_file("OK=1\n" + line + "\n")
    assert "s3cr3t" not in str(caught.value)


def test_not_text_is_refused():
    with pytest.raises(Exception, match="expected the text"):
        env_file(["A=1"])


def test_the_apps_own_ports_do_not_clash():
    assert port_clashes(SS, [8001, 8002], "127.0.0.1", 10001) == []


def test_another_users_port_clashes():
    assert port_clashes(SS, [8002, 8003], "127.0.0.1", 10001) == [{"port": 8003, "address": "127.0.0.1", "uid": 33}]


def test_roots_sockets_carry_no_uid_and_clash():
    assert port_clashes(SS, [443], "127.0.0.1", 10001) == [{"port": 443, "address": "0.0.0.0", "uid": 0}]


def test_a_wildcard_listener_clashes_with_any_address():
    assert port_clashes(SS, [8004], "127.0.0.1", 10001)[0]["port"] == 8004


def test_another_address_does_not_clash_unless_the_app_wants_every_address():
    assert port_clashes(SS, [8005], "127.0.0.1", 10001) == []
    assert port_clashes(SS, [8005], "0.0.0.0", 10001) == [{"port": 8005, "address": "127.0.0.2", "uid": 0}]


def test_ipv6_loopback_is_read():
    assert port_clashes(SS, [6379], "::1", 10001) == [{"port": 6379, "address": "::1", "uid": 104}]


def test_a_line_without_a_port_is_an_error():
    with pytest.raises(Exception, match="cannot read the local address"):
        port_clashes(["LISTEN 0 1 nonsense x"], [1], "127.0.0.1", 1)
