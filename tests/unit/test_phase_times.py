"""tests/bed/phase_times.py: the per-action times scripts/test.sh reports."""

import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bed"))
import phase_times  # noqa: E402

OUTPUT = """INFO     [app > create] Executing
PLAY [Create] ***
INFO     [app > create] Executed: Successful
INFO     [app > converge] Executing
INFO     [app > idempotence] Executing
INFO     [app > idempotence] Executing
"""


def test_record_passes_output_through_and_times_every_action(tmp_path):
    sink = io.StringIO()
    out = tmp_path / "app.json"
    phase_times.record(out, io.StringIO(OUTPUT), sink)
    assert sink.getvalue() == OUTPUT
    data = json.loads(out.read_text())
    assert [p[0] for p in data["phases"]] == ["create", "converge", "idempotence", "idempotence"]
    assert all(p[1] >= 0 for p in data["phases"])


def test_report_sums_repeated_actions(tmp_path):
    (tmp_path / "stack.json").write_text(json.dumps(
        {"total": 100, "phases": [["create", 10], ["idempotence", 20], ["idempotence", 30]]}))
    text = phase_times.report(tmp_path)
    row = next(line for line in text.splitlines() if line.startswith("stack"))
    assert row.split() == ["stack", "10", "-", "-", "-", "50", "-", "-", "-", "100"]
