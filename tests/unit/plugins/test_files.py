"""vmstack.deploy.file_current: when a write can be skipped, and that it never skips a change."""

import hashlib

import pytest

from ansible_collections.vmstack.deploy.plugins.test.files import TestModule as FileTests
from ansible_collections.vmstack.deploy.plugins.test.files import file_current

TEXT = "# Managed by Ansible\n[Journal]\nStorage=persistent\n"
PATH = "/etc/systemd/journald.conf.d/90-vmstack-harden.conf"


def found(**changes):
    """One file as ansible.builtin.find reports it with get_checksum."""
    entry = {"path": PATH, "mode": "0644", "uid": 0, "gid": 0, "pw_name": "root", "gr_name": "root",
             "checksum": hashlib.sha1(TEXT.encode()).hexdigest()}
    return {"files": [{"path": "/etc/other", "mode": "0644", "checksum": "0" * 40}, {**entry, **changes}],
            "matched": 2}


def test_the_same_file_is_current():
    assert file_current(found(), PATH, TEXT, "0644") is True


@pytest.mark.parametrize("mode", ["0644", "644", 0o644])
def test_the_mode_in_any_octal_spelling(mode):
    assert file_current(found(), PATH, TEXT, mode) is True


def test_the_files_list_alone_is_enough():
    assert file_current(found()["files"], PATH, TEXT, "0644") is True


@pytest.mark.parametrize(("entry", "args"), [
    ({"checksum": hashlib.sha1(b"other").hexdigest()}, {}),   # other content
    ({}, {"content": TEXT + "\n"}),                            # one newline more
    ({"mode": "0640"}, {}),
    ({"pw_name": "agent", "uid": 1000}, {}),
    ({"gr_name": "adm", "gid": 4}, {}),
    ({"path": PATH + ".dpkg-old"}, {}),                        # the file is missing
    ({}, {"mode": "u=rw,go=r"}),                               # symbolic modes are not judged
    ({}, {"mode": None}),
    ({}, {"mode": True}),
    ({}, {"content": None}),
    ({}, {"content": "\udcff"}),                               # not encodable text
    ({}, {"owner": None}),
])
def test_anything_different_or_unknown_is_not_current(entry, args):
    call = {"content": TEXT, "mode": "0644", **args}
    assert file_current(found(**entry), PATH, call.pop("content"), call.pop("mode"), **call) is False


@pytest.mark.parametrize(("owner", "group", "current"), [
    (1000, 1000, True), ("1000", "1000", True), ("agent", "agent", True),
    (1001, 1000, False), ("agent", 0, False),
])
def test_owner_and_group_by_name_or_id(owner, group, current):
    entry = found(pw_name="agent", uid=1000, gr_name="agent", gid=1000)
    assert file_current(entry, PATH, TEXT, "0400", owner, group) is False  # mode differs
    assert file_current(entry, PATH, TEXT, "0644", owner, group) is current


@pytest.mark.parametrize("nothing", [None, {}, {"files": None}, "text", [None, 3]])
def test_no_find_result_means_not_current(nothing):
    assert file_current(nothing, PATH, TEXT, "0644") is False


def test_registered_as_a_test():
    assert FileTests().tests()["file_current"] is file_current
