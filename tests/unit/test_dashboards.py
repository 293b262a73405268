"""The monitoring role's Grafana dashboards and provisioning files.

Grafana does not run here: the dashboards are checked for structure, every
panel query is parsed by promtool, every metric must be one the stack exports
(the metric contract below), and the provisioning templates must match
Grafana's documented format. The monitoring scenario then evaluates each query
(``dashboards.py queries``) against the live Prometheus.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import jinja2.meta
import jsonschema
import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "monitoring"))
import dashboards  # noqa: E402
import grafana_provisioning_schema as schema  # noqa: E402

ROLE = HERE.parents[1] / "roles" / "monitoring"
DASHBOARDS_DIR = ROLE / "files" / "dashboards"
TEMPLATES_DIR = ROLE / "templates"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# The role's tasks template grafana-{datasources,dashboards}.yml.j2; either spelling of the first is accepted.
DATASOURCE_TEMPLATE = next((p.name for p in sorted(TEMPLATES_DIR.glob("grafana-datasource*.yml.j2"))),
                           "grafana-datasources.yml.j2")
DASHBOARDS_TEMPLATE = "grafana-dashboards.yml.j2"

BOARDS = dashboards.load_dashboards(DASHBOARDS_DIR)
DATASOURCE = {"type": "prometheus", "uid": "vmstack-prometheus"}
PANEL_TYPES = {"timeseries", "stat", "gauge", "table", "row"}

# The metric contract: what the stack's exporters and the app export.
API = {"http_requests_total", "http_request_duration_seconds_bucket", "http_requests_in_flight",
       "agent_runs_total", "llm_calls_total", "llm_call_duration_seconds_bucket"}
NODE = {"node_cpu_seconds_total", "node_load1", "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes",
        "node_filesystem_avail_bytes", "node_filesystem_size_bytes", "node_network_receive_bytes_total",
        "node_vmstat_oom_kill",
        "vmstack_container_healthy", "vmstack_container_running", "vmstack_container_restart_count",
        "vmstack_backup_last_success_timestamp_seconds", "vmstack_backup_max_age_seconds",
        "vmstack_backup_last_exit_status", "vmstack_backup_duration_seconds", "vmstack_backup_bytes_added",
        "vmstack_backup_snapshots"}
NGINX = {"nginx_up", "nginx_connections_active", "nginx_http_requests_total"}
POSTGRES = {"pg_up", "pg_stat_database_numbackends", "pg_database_size_bytes"}
REDIS = {"redis_up", "redis_memory_used_bytes", "redis_connected_clients", "redis_key_size"}
BLACKBOX = {"probe_success", "probe_ssl_earliest_cert_expiry", "probe_duration_seconds"}  # no host label
ALLOWED = API | NODE | NGINX | POSTGRES | REDIS | BLACKBOX | {"up"}

# What each dashboard is for: the metrics it must show.
REQUIRED = {
    "service.json": {"http_requests_total", "http_request_duration_seconds_bucket", "http_requests_in_flight",
                     "up", "agent_runs_total", "llm_calls_total", "llm_call_duration_seconds_bucket",
                     "probe_success", "probe_ssl_earliest_cert_expiry"},
    "host.json": {"node_cpu_seconds_total", "node_load1", "node_memory_MemAvailable_bytes",
                  "node_filesystem_avail_bytes", "node_filesystem_size_bytes", "node_network_receive_bytes_total",
                  "node_vmstat_oom_kill"},
    "data.json": POSTGRES | REDIS,
    "nginx.json": NGINX | {"vmstack_container_healthy", "vmstack_container_running",
                           "vmstack_container_restart_count"},
    "backups.json": {"vmstack_backup_last_success_timestamp_seconds", "vmstack_backup_last_exit_status",
                     "vmstack_backup_duration_seconds", "vmstack_backup_bytes_added", "vmstack_backup_snapshots"},
}

MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def all_queries():
    """(file, panel title, refId, expr) of every target of every dashboard."""
    return [(name, *query) for name, board in BOARDS.items() for query in dashboards.panel_queries(board)]


QUERIES = all_queries()
QUERY_IDS = [f"{name}:{title}:{ref}" for name, title, ref, _ in QUERIES]


def promtool_or_skip():
    if Path(PROMTOOL).is_file():
        return PROMTOOL
    if os.environ.get("CI"):
        pytest.fail(f"promtool not found ({PROMTOOL}); CI must run the PromQL parse check")
    pytest.skip("promtool not installed")


def check_rules(tmp_path, exprs):
    """promtool check rules on every expression as a recording rule."""
    rules = [{"record": f"panel:q{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}, sort_keys=False))
    return subprocess.run([promtool_or_skip(), "check", "rules", str(path)],
                          capture_output=True, text=True, check=False)


# --- the dashboards -----------------------------------------------------------


def test_the_five_dashboards_exist():
    assert sorted(BOARDS) == sorted(REQUIRED)


def test_queries_found():
    assert len(QUERIES) >= 40
    for name in BOARDS:
        assert any(q[0] == name for q in QUERIES), name


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_no_structural_problems(name):
    assert dashboards.problems(BOARDS[name]) == []


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_conventions(name):
    board = BOARDS[name]
    assert board["uid"].startswith("vmstack-") and len(board["uid"]) <= 40
    assert board["title"].startswith("vmstack / ")
    assert board["schemaVersion"] == 39
    assert board["tags"] == ["vmstack"]
    assert board["time"] == {"from": "now-1h", "to": "now"}
    assert board["refresh"] == "30s"
    assert board.get("id") is None  # Grafana assigns it; a fixed id clashes between instances
    host = [v for v in board["templating"]["list"] if v["name"] == "host"]
    assert len(host) == 1
    host = host[0]
    assert host["type"] == "query"
    assert host["datasource"] == DATASOURCE
    assert host["definition"] == "label_values(up, host)"
    query = host["query"]
    assert (query["query"] if isinstance(query, dict) else query) == "label_values(up, host)"
    assert host["includeAll"] is True and host["multi"] is True
    assert host["allValue"] == ".+"
    for panel in dashboards.iter_panels(board):
        assert panel["type"] in PANEL_TYPES, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])
                assert "legendFormat" in target, (panel["title"], target["refId"])


def test_uids_and_titles_are_unique():
    assert len({b["uid"] for b in BOARDS.values()}) == len(BOARDS)
    assert len({b["title"] for b in BOARDS.values()}) == len(BOARDS)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_files_are_pretty_printed(name):
    text = (DASHBOARDS_DIR / name).read_text()
    assert text == json.dumps(BOARDS[name], indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panels_fit_the_grid_without_overlapping(name):
    def check(panels):
        boxes = []
        for panel in panels:
            g = panel["gridPos"]
            assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, panel["title"]
            assert g["x"] + g["w"] <= 24, panel["title"]
            for title, other in boxes:
                apart = (g["x"] + g["w"] <= other["x"] or other["x"] + other["w"] <= g["x"]
                         or g["y"] + g["h"] <= other["y"] or other["y"] + other["h"] <= g["y"])
                assert apart, f"{panel['title']!r} overlaps {title!r}"
            boxes.append((panel["title"], g))
            if panel.get("panels"):
                check(panel["panels"])

    check(BOARDS[name]["panels"])


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_dashboard_shows_its_metrics(name):
    used = {metric for file, _, _, expr in QUERIES if file == name for metric, _ in dashboards.selectors(expr)}
    assert sorted(REQUIRED[name] - used) == []


@pytest.mark.parametrize("query", QUERIES, ids=QUERY_IDS)
def test_metrics_are_in_the_contract(query):
    _, _, _, expr = query
    found = dashboards.selectors(expr)
    assert found, "no metric in the expression"
    for metric, _ in found:
        assert metric, f"selector without a metric name in {expr!r}"
        assert metric in ALLOWED, f"{metric} is not a metric the stack exports"


@pytest.mark.parametrize("query", QUERIES, ids=QUERY_IDS)
def test_selectors_filter_by_host(query):
    _, _, _, expr = query
    for metric, matchers in dashboards.selectors(expr):
        labels = {(label, op, value) for label, op, value in MATCHER.findall(matchers)}
        if metric in BLACKBOX:
            assert ("job", "=", "blackbox-https") in labels, expr
            assert not any(label == "host" for label, _, _ in labels), f"{metric} has no host label"
        else:
            assert ("host", "=~", "$host") in labels, f'{metric} without host=~"$host" in {expr!r}'


@pytest.mark.parametrize("query", QUERIES, ids=QUERY_IDS)
def test_range_windows_follow_the_dashboard(query):
    _, _, _, expr = query
    for window in dashboards.ranges(expr):
        assert window in ("$__rate_interval", "$__range"), f"fixed window [{window}] in {expr!r}"


def test_every_query_parses_as_promql(tmp_path):
    exprs = [dashboards.substitute(expr, dashboards.variable_names(BOARDS[name])) for name, _, _, expr in QUERIES]
    assert not any("$" in e for e in exprs), [e for e in exprs if "$" in e]
    result = check_rules(tmp_path, exprs)
    output = result.stdout + result.stderr
    broken = [f"{QUERY_IDS[int(i)]}: {exprs[int(i)]}" for i in sorted(set(re.findall(r"panel:q(\d+)", output)))]
    assert result.returncode == 0, "\n".join([output, "broken panels:", *broken])
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_promtool_rejects_a_broken_query(tmp_path):
    result = check_rules(tmp_path, ['sum(rate(http_requests_total{host=~".+"}[1m])'])
    assert result.returncode != 0


def test_queries_command_prints_every_query_substituted():
    out = subprocess.run([sys.executable, str(HERE / "monitoring" / "dashboards.py"), "queries", str(DASHBOARDS_DIR)],
                         capture_output=True, text=True, check=True).stdout
    listed = json.loads(out)
    assert len(listed) == len(QUERIES)
    assert all(set(q) == {"dashboard", "panel", "refId", "expr"} for q in listed)
    assert {q["dashboard"] for q in listed} == set(BOARDS)
    assert not any("$" in q["expr"] for q in listed)


def test_check_command_passes():
    result = subprocess.run([sys.executable, str(HERE / "monitoring" / "dashboards.py"), "check",
                             str(DASHBOARDS_DIR)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the tooling itself -------------------------------------------------------


def make_board(**changes):
    ds = dict(DATASOURCE)
    board = {
        "uid": "vmstack-test", "title": "vmstack / test", "schemaVersion": 39,
        "templating": {"list": [{"name": "host", "type": "query", "datasource": ds},
                                {"name": "app", "type": "custom"}]},
        "panels": [
            {"type": "timeseries", "id": 1, "title": "a", "datasource": ds,
             "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0},
             "targets": [{"refId": "A", "datasource": ds, "expr": 'up{host=~"$host"}'}]},
            {"type": "row", "id": 2, "title": "r", "collapsed": True, "gridPos": {"h": 1, "w": 24, "x": 0, "y": 8},
             "panels": [{"type": "stat", "id": 3, "title": "b", "datasource": ds,
                         "gridPos": {"h": 4, "w": 6, "x": 0, "y": 9},
                         "targets": [{"refId": "A", "datasource": ds, "expr": 'up{app=~"${app}"}'},
                                     {"refId": "B", "datasource": ds, "expr": "vector(1)"}]}]},
        ],
    }
    board.update(changes)
    return board


def test_panel_queries_recurse_into_rows():
    assert dashboards.panel_queries(make_board()) == [
        ("a", "A", 'up{host=~"$host"}'), ("b", "A", 'up{app=~"${app}"}'), ("b", "B", "vector(1)")]


def test_problems_of_a_sound_board():
    assert dashboards.problems(make_board()) == []


@pytest.mark.parametrize("breakage, expected", [
    (lambda b: b.pop("uid"), "no uid"),
    (lambda b: b.pop("schemaVersion"), "no schemaVersion"),
    (lambda b: b["panels"][1]["panels"][0].update(id=1), "id 1 already used"),
    (lambda b: b["panels"][0].pop("gridPos"), "no gridPos"),
    (lambda b: b["panels"][0].update(datasource={"type": "prometheus", "uid": "other"}), "datasource is not"),
    (lambda b: b["panels"][0]["targets"][0].update(datasource="Prometheus"), "datasource is not"),
    (lambda b: b["panels"][0]["targets"][0].update(expr=" "), "empty expr"),
    (lambda b: b["panels"][0]["targets"][0].update(expr='up{x="$nope"}'), "$nope is not defined"),
    (lambda b: b["panels"][0]["targets"][0].update(expr='up{x="[[nope]]"}'), "$nope is not defined"),
    (lambda b: b["templating"]["list"].pop(1), "$app is not defined"),
])
def test_problems_found(breakage, expected):
    board = make_board()
    breakage(board)
    found = dashboards.problems(board)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize("expr, expected", [
    ('x{host=~"$host"}', 'x{host=~".+"}'),
    ('x{host=~"${host}"}', 'x{host=~".+"}'),
    ('x{host=~"${host:regex}"}', 'x{host=~".+"}'),
    ("rate(x[$__rate_interval])", "rate(x[1m])"),
    ("rate(x[${__interval}])", "rate(x[1m])"),
    ("increase(x[$__range])", "increase(x[1h])"),
    ("x / $__range_s", "x / 3600"),
    ('x{app=~"$app", db="[[db]]"}', 'x{app=~".+", db=".+"}'),
    ('x{other="$other"}', 'x{other="$other"}'),  # not a dashboard variable: left for promtool to reject
])
def test_substitute(expr, expected):
    assert dashboards.substitute(expr, ["app", "db"]) == expected


def test_substitute_with_values():
    assert dashboards.substitute('x{app="$app"}', {"app": "api"}) == 'x{app="api"}'
    assert dashboards.substitute('x{host=~"$host"}') == 'x{host=~".+"}'


@pytest.mark.parametrize("expr, expected", [
    ('sum by (route) (rate(http_requests_total{host=~"$host"}[$__rate_interval]))',
     [("http_requests_total", 'host=~"$host"')]),
    ('histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="}"}[1m]))) / on (host) group_left (app) b > bool 1',
     [("a_bucket", 'x="}"'), ("b", "")]),
    ("(time() - c) / 86400 offset 5m", [("c", "")]),
    ("sum(up) without (job) or vector(0)", [("up", "")]),
    ('{__name__="d"}', [("", '__name__="d"')]),
])
def test_selectors(expr, expected):
    assert dashboards.selectors(expr) == expected


# --- the provisioning templates -----------------------------------------------

TEST_VALUES = {
    "ansible_managed": "Ansible managed: do not edit",
    "monitoring_grafana_prometheus_url": "http://prometheus:9090",
    "monitoring_scrape_interval": "15s",
    "monitoring_grafana_folder": "vmstack: the stack",  # a colon: quoting matters
    "monitoring_grafana_dashboards_dir": "/var/lib/grafana/dashboards/vmstack",
}


def render(template: str, **overrides) -> tuple[str, dict]:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, keep_trailing_newline=True)  # as ansible.builtin.template
    env.filters["to_json"] = json.dumps
    source = (TEMPLATES_DIR / template).read_text()
    names = jinja2.meta.find_undeclared_variables(env.parse(source))
    values = {name: TEST_VALUES.get(name, f"test-{name}") for name in names}
    values.update(overrides)
    text = env.get_template(template).render(**values)
    return text, yaml.safe_load(text)


@pytest.mark.parametrize("template", [DATASOURCE_TEMPLATE, DASHBOARDS_TEMPLATE])
def test_templates_start_with_ansible_managed(template):
    assert (TEMPLATES_DIR / template).read_text().splitlines()[0] == "# {{ ansible_managed }}"
    text, _ = render(template)
    assert text.splitlines()[0] == "# Ansible managed: do not edit"


def test_datasource_file():
    _, data = render(DATASOURCE_TEMPLATE)
    jsonschema.validate(data, schema.DATASOURCES)
    assert data["apiVersion"] == 1
    assert data["datasources"] == [{
        "name": "Prometheus", "type": "prometheus", "uid": "vmstack-prometheus", "access": "proxy",
        "url": "http://prometheus:9090", "isDefault": True, "editable": False,
        "jsonData": {"timeInterval": "15s"},
    }]


def test_datasource_uid_is_the_dashboards_one():
    _, data = render(DATASOURCE_TEMPLATE)
    assert {ds["uid"] for ds in data["datasources"]} == {DATASOURCE["uid"]}


def test_dashboards_file():
    _, data = render(DASHBOARDS_TEMPLATE)
    jsonschema.validate(data, schema.DASHBOARDS)
    assert data == {"apiVersion": 1, "providers": [{
        "name": "vmstack", "folder": "vmstack: the stack", "type": "file", "disableDeletion": True,
        "allowUiUpdates": False, "updateIntervalSeconds": 60,
        "options": {"path": "/var/lib/grafana/dashboards/vmstack", "foldersFromFilesStructure": False},
    }]}


def test_values_with_quotes_stay_one_string():
    _, data = render(DATASOURCE_TEMPLATE, monitoring_grafana_prometheus_url='http://p:9090/a"b#c')
    assert data["datasources"][0]["url"] == 'http://p:9090/a"b#c'


@pytest.mark.parametrize("which, mutate", [
    ("datasources", lambda d: d["datasources"][0].update(isdefault=True)),
    ("datasources", lambda d: d["datasources"][0].update(access="server")),
    ("datasources", lambda d: d["datasources"][0].pop("type")),
    ("datasources", lambda d: d["datasources"][0].update(uid="x" * 41)),
    ("datasources", lambda d: d["datasources"][0].update(jsonData="timeInterval: 15s")),
    ("datasources", lambda d: d.update(apiVersion="1")),
    ("datasources", lambda d: d.update(deleteDatasources=[{"orgId": 1}])),
    ("dashboards", lambda d: d["providers"][0].update(type="git")),
    ("dashboards", lambda d: d["providers"][0]["options"].pop("path")),
    ("dashboards", lambda d: d["providers"][0].update(foldersFromFilesStructure=True)),  # belongs in options
    ("dashboards", lambda d: d["providers"][0]["options"].update(foldersFromFilesStructure=True)),  # with folder
    ("dashboards", lambda d: d["providers"][0].update(updateIntervalSeconds="60")),
])
def test_schemas_reject_mistakes(which, mutate):
    template, schema_ = {"datasources": (DATASOURCE_TEMPLATE, schema.DATASOURCES),
                         "dashboards": (DASHBOARDS_TEMPLATE, schema.DASHBOARDS)}[which]
    _, data = render(template)
    mutate(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema_)


def test_schemas_accept_documented_examples():
    jsonschema.validate({
        "apiVersion": 1,
        "deleteDatasources": [{"name": "Graphite", "orgId": 1}],
        "prune": True,
        "datasources": [{"name": "Graphite", "type": "graphite", "access": "proxy", "orgId": 1, "uid": "my_unique_uid",
                         "url": "http://localhost:8080", "user": "", "database": "", "basicAuth": False,
                         "basicAuthUser": "", "withCredentials": False, "isDefault": False,
                         "jsonData": {"graphiteVersion": "1.1", "tlsAuth": True},
                         "secureJsonData": {"tlsCACert": "..."}, "version": 1, "editable": False}],
    }, schema.DATASOURCES)
    jsonschema.validate({
        "apiVersion": 1,
        "providers": [{"name": "a unique provider name", "orgId": 1, "folder": "", "folderUid": "", "type": "file",
                       "disableDeletion": False, "updateIntervalSeconds": 10, "allowUiUpdates": False,
                       "options": {"path": "/var/lib/grafana/dashboards", "foldersFromFilesStructure": True}}],
    }, schema.DASHBOARDS)
    jsonschema.Draft202012Validator.check_schema(schema.DATASOURCES)
    jsonschema.Draft202012Validator.check_schema(schema.DASHBOARDS)
