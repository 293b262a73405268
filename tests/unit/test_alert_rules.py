"""roles/monitoring/files/alerts.yml: valid for Prometheus, every alert documented
for the operator, and every alert tested by tests/unit/monitoring/alerts.test.yml
(promtool test rules): a new alert without a test fails here."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = Path("roles/monitoring/files/alerts.yml")
TESTS = Path("tests/unit/monitoring/alerts.test.yml")
SEVERITIES = {"critical", "warning"}


def alerts() -> list:
    groups = yaml.safe_load((ROOT / RULES).read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def rule_tests() -> list:
    return [case for test in yaml.safe_load((ROOT / TESTS).read_text())["tests"]
            for case in test.get("alert_rule_test", [])]


def always_firing(rule) -> bool:
    return rule["expr"].strip() == "vector(1)"


@pytest.fixture(scope="module")
def promtool():
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (apt-get install prometheus)")
        pytest.skip("promtool is not installed")
    return path


def run(*args):
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"


def test_promtool_accepts_the_rules(promtool):
    run(promtool, "check", "rules", RULES)


def test_promtool_unit_tests_pass(promtool):
    run(promtool, "test", "rules", TESTS)


def test_group_names():
    groups = yaml.safe_load((ROOT / RULES).read_text())["groups"]
    assert [g["name"] for g in groups if not g["name"].startswith("vmstack-")] == []


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_every_alert_has_severity_summary_and_description(rule):
    severity = rule.get("labels", {}).get("severity")
    # the dead man's switch pages no one: its receiver is a heartbeat
    assert severity in (SEVERITIES | {"none"} if always_firing(rule) else SEVERITIES)
    annotations = rule.get("annotations", {})
    assert annotations.get("summary", "").strip(), "no summary"
    assert "\n" not in annotations["summary"].strip(), "the summary is one line"
    assert annotations.get("description", "").strip(), "no description"


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_for_durations_are_production_ones(rule):
    """1m to 15m (or none for an alert whose expression waits itself, e.g. increase over 15m)."""
    if "for" in rule:
        value, unit = re.fullmatch(r"(\d+)([smh])", rule["for"]).groups()
        seconds = int(value) * {"s": 1, "m": 60, "h": 3600}[unit]
        assert 60 <= seconds <= 900, rule["for"]


def test_alert_names_are_unique():
    names = [r["alert"] for r in alerts()]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_every_alert_is_tested():
    cases = rule_tests()
    tested = {c["alertname"] for c in cases}
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = {r["alert"] for r in alerts()}
    assert sorted(names - tested) == [], f"alerts without a case in {TESTS}"
    assert sorted(names - firing) == [], "alerts never tested firing"
    assert sorted(names - quiet - {r["alert"] for r in alerts() if always_firing(r)}) == [], \
        "alerts never tested quiet"
    assert sorted(tested - names) == [], "cases for alerts that do not exist"
