"""The backup script's pure parts: the dump manifest, run grouping and selection, metrics."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "backup" / "files" / "vmstack-backup"
_loader = importlib.machinery.SourceFileLoader("vmstack_backup", str(SCRIPT))
_spec = importlib.util.spec_from_loader("vmstack_backup", _loader)
vb = importlib.util.module_from_spec(_spec)
_loader.exec_module(vb)

DUMP = b"""--
-- PostgreSQL database dump
--
SET statement_timeout = 0;
CREATE TABLE public.agent_runs (id uuid NOT NULL, input text);
COPY public.agent_runs (id, input) FROM stdin;
1\tfirst
2\tsecond
3\tthird
\\.

COPY public.schema_migrations (version, description, applied_at) FROM stdin;
1\tcreate agent_runs\t2026-12-03 10:00:00+00
\\.

COPY public."Empty" (x) FROM stdin;
\\.

-- PostgreSQL database dump complete
"""


def manifest(data: bytes, chunk: int) -> dict:
    m = vb.DumpManifest()
    for i in range(0, len(data), chunk):
        m.feed(data[i:i + chunk])
    return m.close()


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_the_manifest_counts_rows_per_table_whatever_the_chunk_size(chunk):
    got = manifest(DUMP, chunk)
    assert {t: v["rows"] for t, v in got.items()} == {
        "public.agent_runs": 3, "public.schema_migrations": 1, 'public."Empty"': 0}
    assert got["public.agent_runs"]["columns"] == "id, input"
    assert got == manifest(DUMP, 1 << 20)


def test_a_table_read_back_with_copy_has_the_digest_of_its_dump_and_a_changed_row_does_not():
    dumped = manifest(DUMP, 1 << 20)["public.agent_runs"]
    assert vb.table_digest(b"1\tfirst\n2\tsecond\n3\tthird\n") == {"rows": 3, "sha256": dumped["sha256"]}
    assert vb.table_digest(b"1\tfirst\n2\tsecond!\n3\tthird\n")["sha256"] != dumped["sha256"]
    assert vb.table_digest(b"1\tfirst\n2\tsecond\n")["rows"] == 2
    empty = manifest(DUMP, 1 << 20)['public."Empty"']
    assert vb.table_digest(b"") == {"rows": 0, "sha256": empty["sha256"]}


def test_a_line_that_looks_like_a_terminator_inside_data_is_data():
    dump = b"COPY public.t (x) FROM stdin;\nab\\.\n\\.c\n\\.\n"
    got = manifest(dump, 1)["public.t"]
    assert got["rows"] == 2
    assert got["sha256"] == vb.table_digest(b"ab\\.\n\\.c\n")["sha256"]


def snap(sid: str, run: str, part: str, time: str, kind: str = "scheduled") -> dict:
    return {"id": sid, "time": time, "tags": ["vmstack", "app=agent", f"run={run}", f"part={part}", f"kind={kind}"]}


SNAPS = [
    snap("aaaaaaaa11", "20261201T030000Z", "postgres", "2026-12-01T03:00:00.123456789Z"),
    snap("aaaaaaaa22", "20261201T030000Z", "files", "2026-12-01T03:00:00.123456789Z"),
    snap("bbbbbbbb11", "20261202T030000Z", "postgres", "2026-12-02T03:00:00Z"),
    snap("bbbbbbbb22", "20261202T030000Z", "files", "2026-12-02T03:00:00Z"),
    # a run whose files part is missing (failed half-way): never chosen
    snap("cccccccc11", "20261203T030000Z", "postgres", "2026-12-03T03:00:00Z"),
    {"id": "dddddddd", "time": "2026-12-03T04:00:00Z", "tags": ["unrelated"]},
]


def test_runs_group_the_two_parts_and_skip_foreign_snapshots():
    runs = vb.group_runs(SNAPS)
    assert [r["run"] for r in runs] == ["20261201T030000Z", "20261202T030000Z", "20261203T030000Z"]
    assert runs[0]["parts"] == {"postgres": "aaaaaaaa11", "files": "aaaaaaaa22"}


@pytest.mark.parametrize("spec,run", [
    ("latest", "20261202T030000Z"),
    ("", "20261202T030000Z"),
    ("20261201T030000Z", "20261201T030000Z"),
    ("aaaaaaaa22", "20261201T030000Z"),
    ("bbbbbb", "20261202T030000Z"),
    ("2026-12-01T12:00:00Z", "20261201T030000Z"),
    ("2026-12-02T03:00:00+00:00", "20261202T030000Z"),
    ("2026-12-31", "20261202T030000Z"),
])
def test_a_spec_names_the_complete_run_it_means(spec, run):
    assert vb.resolve_run(vb.group_runs(SNAPS), spec, {"postgres", "files"})["run"] == run


@pytest.mark.parametrize("spec,message", [
    ("ffffffff", "no run or snapshot 'ffffffff'"),
    ("cccccccc11", "no run or snapshot"),
    ("2026-11-30T00:00:00Z", "no complete run at or before"),
    ("20261", "no run or snapshot"),
])
def test_a_spec_that_names_nothing_complete_is_refused(spec, message):
    with pytest.raises(vb.BackupError, match=message):
        vb.resolve_run(vb.group_runs(SNAPS), spec, {"postgres", "files"})


def test_an_empty_repository_is_refused():
    with pytest.raises(vb.BackupError, match="no complete backup run"):
        vb.resolve_run([], "latest", {"files"})


def test_metrics_are_prometheus_text_with_the_app_label_and_skip_unknown_values():
    text = vb.render_metrics('a"b', {"last_exit_status": 0, "duration_seconds": 1.5, "bytes_added": None})
    assert text == ("# TYPE vmstack_backup_duration_seconds gauge\n"
                    'vmstack_backup_duration_seconds{app="a\\"b"} 1.5\n'
                    "# TYPE vmstack_backup_last_exit_status gauge\n"
                    'vmstack_backup_last_exit_status{app="a\\"b"} 0\n')


def test_the_summary_of_restic_json_output_is_found_after_status_lines():
    out = b'{"message_type":"status","percent_done":0.5}\n{"message_type":"summary","snapshot_id":"abc","data_added":42}\n'
    assert vb.restic_summary(out) == {"message_type": "summary", "snapshot_id": "abc", "data_added": 42}
    assert vb.restic_summary(b"garbage\n") == {}


@pytest.mark.parametrize("url, expected", [
    ("postgresql://ext:s3cr%3At@db.example.com:5432/app?sslmode=require",
     {"url": "postgresql://ext@db.example.com:5432/app?sslmode=require", "password": "s3cr:t", "user": "ext",
      "db": "app"}),
    # several servers, the password and the user as options, the database as the user's name
    ("postgres://h1:5432,h2:5433/?user=app&password=p%40ss&target_session_attrs=read-write",
     {"url": "postgres://h1:5432,h2:5433/?user=app&target_session_attrs=read-write", "password": "p@ss",
      "user": "app", "db": "app"}),
    ("postgresql://ext:pw@[2001:db8::1]:6432/runs?dbname=other",
     {"url": "postgresql://ext@[2001:db8::1]:6432/runs?dbname=other", "password": "pw", "user": "ext",
      "db": "other"}),
])
def test_a_managed_database_url_splits_into_what_may_be_shown_and_its_password(url, expected):
    parts = vb.split_database_url(url)
    assert parts == expected
    assert expected["password"] not in parts["url"]


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "postgresql:///db", "postgresql://h/"])
def test_a_url_that_names_no_postgresql_user_or_database_is_refused_without_its_value(url):
    with pytest.raises(vb.BackupError) as exc:
        vb.split_database_url(url)
    assert url not in str(exc.value)


def test_the_pgpass_line_escapes_what_libpq_reads_as_separators():
    assert vb.pgpass_line("a:b\\c") == "*:*:*:*:a\\:b\\\\c\n"


def test_the_pump_copies_every_byte_in_order_and_shows_each_chunk_once():
    import io
    data = bytes(range(256)) * 40000  # (10 MB: more chunks than the reader may hold ahead)
    sink, seen = io.BytesIO(), []
    vb.pump(io.BytesIO(data), sink, seen.append, abort=lambda: None, ahead=2)
    assert sink.getvalue() == data and b"".join(seen) == data


class _Broken:
    def write(self, chunk):
        raise BrokenPipeError


def test_the_pump_stops_the_source_and_fails_when_the_writing_fails():
    import io
    aborted = []
    with pytest.raises(BrokenPipeError):
        vb.pump(io.BytesIO(b"x" * (5 << 20)), _Broken(), lambda c: None, abort=lambda: aborted.append(1), ahead=1)
    assert aborted == [1]


def test_the_pump_fails_with_the_readers_error():
    import io

    class Failing(io.RawIOBase):
        def read(self, n=-1):
            raise OSError("the dump broke")
    with pytest.raises(OSError, match="the dump broke"):
        vb.pump(Failing(), io.BytesIO(), lambda c: None, abort=lambda: None)


@pytest.mark.parametrize("dump_rc, backup_rc, stopped, expected", [
    (0, 0, False, None),
    # restic refused the password and exited: the pipe broke, the dump was stopped (killed)
    (-9, 1, True, "restic backup (postgres) failed: Fatal: wrong password"),
    # restic exited before the dump had written much, and the dump ended on its own
    (0, 1, False, "restic backup (postgres) failed: Fatal: wrong password"),
    # the dump failed on its own (restic saw the stream end and failed too, or not)
    (1, 0, False, "pg_dump failed: FATAL: role does not exist"),
    (1, 1, False, "pg_dump failed: FATAL: role does not exist"),
])
def test_a_failed_stream_names_its_cause(dump_rc, backup_rc, stopped, expected):
    assert vb.stream_failure(dump_rc, backup_rc, stopped, b"FATAL: role does not exist\n",
                             b"Fatal: wrong password\n") == expected


CHECK = """[offset 0] Checking RDB file /data/dump.rdb
[offset 693] \\o/ RDB looks OK! \\o/
[info] 7 keys read
[info] 1 expires
[info] 1 already expired
"""


def test_the_dump_check_counts_keys_and_those_with_an_expiry():
    assert vb.rdb_counts(CHECK, "dump.rdb") == {"keys": 7, "expires": 1}
    with pytest.raises(vb.BackupError, match="no valid dump"):
        vb.rdb_counts("[offset 0] Checking RDB file\n--- RDB ERROR DETECTED ---\n", "dump.rdb")


@pytest.mark.parametrize("loaded, ok", [(7, True), (6, True), (5, False), (8, False)])
def test_a_drill_allows_only_keys_with_an_expiry_to_be_missing(loaded, ok):
    assert (vb.redis_keys_problem(loaded, {"keys": 7, "expires": 1}) == "") is ok


def test_a_manifest_without_expiries_wants_every_key():
    assert vb.redis_keys_problem(6, {"keys": 7}) != ""
