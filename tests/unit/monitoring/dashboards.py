"""Read the provisioned Grafana dashboards and the PromQL in their panels.

Plain Python (no Ansible, no Grafana): the unit tests check the dashboards'
structure and parse every query with promtool; the monitoring scenario's
verify step runs the ``queries`` command and evaluates each query against the
live Prometheus, so a panel that would stay empty fails the test.

    python3 dashboards.py queries DIR   # JSON list of {dashboard, panel, refId, expr}
    python3 dashboards.py check DIR     # structural problems, exit status 1 if any
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

DATASOURCE_UID = "vmstack-prometheus"

# Grafana's interval variables, as the verify step evaluates them: an instant
# query over the last minute ($__rate_interval is at least four scrape
# intervals in Grafana; 1m covers the 15 s default) and a one-hour range.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
ALL = ".+"  # the dashboards' allValue: every value of a multi-value variable

# $name, ${name}, ${name:format} and the deprecated [[name]] / [[name:format]].
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")


def load_dashboards(directory) -> dict[str, dict]:
    """Every ``*.json`` dashboard in ``directory``, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(Path(directory).glob("*.json"))}


def iter_panels(dashboard: Mapping) -> Iterator[dict]:
    """Every panel, rows included, and the panels inside (collapsed) rows."""

    def walk(panels):
        for panel in panels or []:
            yield panel
            yield from walk(panel.get("panels"))

    yield from walk(dashboard.get("panels"))


def panel_queries(dashboard: Mapping) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every target, in panel order."""
    return [
        (panel.get("title", ""), target.get("refId", ""), target.get("expr", ""))
        for panel in iter_panels(dashboard)
        for target in panel.get("targets") or []
    ]


def variable_names(dashboard: Mapping) -> list[str]:
    """The names of the dashboard's template variables."""
    return [v.get("name", "") for v in (dashboard.get("templating") or {}).get("list") or []]


def used_variables(text: str) -> set[str]:
    """Names of the variables referenced in ``text`` (built-ins included)."""
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text or "")}


def substitute(expr: str, variables: Iterable[str] | Mapping[str, str] | None = None) -> str:
    """``expr`` as Prometheus sees it with every variable at "All".

    ``$host`` and the dashboard's other variables (``variables``: their names,
    or a mapping of name to value) become ``.+``; ``$__rate_interval`` and
    ``$__interval`` become ``1m`` and ``$__range`` ``1h``. Anything else is left
    in place, so promtool rejects a variable the dashboard does not define.
    """
    values = dict(BUILTINS)
    values["host"] = ALL
    if isinstance(variables, Mapping):
        values.update(variables)
    elif variables is not None:
        values.update({name: ALL for name in variables})

    def replace(match: re.Match) -> str:
        name = next(g for g in match.groups() if g)
        return values.get(name, match.group(0))

    return _VARIABLE.sub(replace, expr)


def _datasource_uid(datasource) -> str | None:
    if isinstance(datasource, Mapping):
        return datasource.get("uid")
    return datasource  # a bare name or uid (the pre-8.3 form)


def problems(dashboard: Mapping) -> list[str]:
    """What would make Grafana reject the dashboard or show a broken panel."""
    found = []
    for key in ("uid", "title"):
        if not dashboard.get(key):
            found.append(f"dashboard has no {key}")
    if not isinstance(dashboard.get("schemaVersion"), int):
        found.append("dashboard has no schemaVersion")

    defined = set(variable_names(dashboard))
    if len(defined) != len(variable_names(dashboard)):
        found.append("template variable names are not unique")
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if "datasource" in variable and _datasource_uid(variable["datasource"]) != DATASOURCE_UID:
            found.append(f"variable {variable.get('name')!r}: datasource is not {DATASOURCE_UID}")

    ids: dict[object, str] = {}
    for panel in iter_panels(dashboard):
        title = panel.get("title", "")
        name = f"panel {title!r}"
        pid = panel.get("id")
        if not isinstance(pid, int):
            found.append(f"{name}: no integer id")
        elif pid in ids:
            found.append(f"{name}: id {pid} already used by panel {ids[pid]!r}")
        else:
            ids[pid] = title
        grid = panel.get("gridPos")
        if not isinstance(grid, Mapping) or not all(isinstance(grid.get(k), int) for k in "hwxy"):
            found.append(f"{name}: no gridPos with h, w, x and y")
        if panel.get("type") == "row":
            continue
        if _datasource_uid(panel.get("datasource")) != DATASOURCE_UID:
            found.append(f"{name}: datasource is not {DATASOURCE_UID}")
        targets = panel.get("targets") or []
        if not targets:
            found.append(f"{name}: no targets")
        refids = [t.get("refId") for t in targets]
        if len(set(refids)) != len(refids) or not all(refids):
            found.append(f"{name}: refIds missing or not unique: {refids}")
        for target in targets:
            where = f"{name} target {target.get('refId')!r}"
            if _datasource_uid(target.get("datasource")) != DATASOURCE_UID:
                found.append(f"{where}: datasource is not {DATASOURCE_UID}")
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                found.append(f"{where}: empty expr")
            texts = (expr or "", target.get("legendFormat") or "", title)
            for var in sorted(set().union(*map(used_variables, texts))):
                if var not in defined and var not in BUILTINS and not var.startswith("__"):
                    found.append(f"{where}: variable ${var} is not defined")
    return found


# --- PromQL, as far as the tests need it --------------------------------------

_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                 "bottomk", "topk", "quantile", "limitk", "limit_ratio"}  # may precede "by (...)"
_KEYWORDS = _GROUPING | _AGGREGATIONS | {"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(?:0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)[A-Za-z0-9]*")


def _skip_string(expr: str, start: int) -> int:
    quote, i = expr[start], start + 1
    while i < len(expr):
        if expr[i] == "\\" and quote != "`":
            i += 2
            continue
        if expr[i] == quote:
            return i + 1
        i += 1
    raise ValueError(f"unterminated string in {expr!r}")


def _close(expr: str, start: int, opening: str, closing: str) -> int:
    """Index just past the bracket that closes the one at ``start``, strings skipped."""
    depth, i = 0, start
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = _skip_string(expr, i)
            continue
        if c == opening:
            depth += 1
        elif c == closing:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {opening!r} in {expr!r}")


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, label matchers) of every vector selector in ``expr``.

    A lexer, not a parser (promtool parses): it tells metric names from
    function names, keywords and grouping labels. A selector without a name
    (``{__name__=~"..."}``) is reported with the name "".
    """
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c.isspace():
            i += 1
        elif c in "\"'`":
            i = _skip_string(expr, i)
        elif c == "{":
            end = _close(expr, i, "{", "}")
            found.append(("", expr[i + 1:end - 1]))
            i = end
        elif c == "[":
            i = _close(expr, i, "[", "]")
        elif c.isdigit() or (c == "." and i + 1 < len(expr) and expr[i + 1].isdigit()):
            i = _NUMBER.match(expr, i).end()
        elif _IDENT.match(expr, i):
            word = _IDENT.match(expr, i).group(0)
            j = _IDENT.match(expr, i).end()
            while j < len(expr) and expr[j].isspace():
                j += 1
            nxt = expr[j] if j < len(expr) else ""
            if word.lower() in _GROUPING and nxt == "(":
                i = _close(expr, j, "(", ")")  # a label list, not an expression
            elif word.lower() in _KEYWORDS or nxt == "(":
                i = j  # keyword or function call
            elif nxt == "{":
                end = _close(expr, j, "{", "}")
                found.append((word, expr[j + 1:end - 1]))
                i = end
            else:
                found.append((word, ""))
                i = j
        else:
            i += 1
    return found


def ranges(expr: str) -> list[str]:
    """The contents of every range or subquery bracket (``[5m]`` gives ``5m``)."""
    found, i = [], 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = _skip_string(expr, i)
        elif c == "[":
            end = _close(expr, i, "[", "]")
            found.append(expr[i + 1:end - 1].strip())
            i = end
        else:
            i += 1
    return found


# --- command line -------------------------------------------------------------


def queries(directory) -> list[dict]:
    """Every target of every dashboard in ``directory``, variables substituted."""
    return [
        {"dashboard": name, "panel": title, "refId": ref, "expr": substitute(expr, variable_names(dashboard))}
        for name, dashboard in load_dashboards(directory).items()
        for title, ref, expr in panel_queries(dashboard)
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("queries", help="print every panel query as JSON").add_argument("directory")
    commands.add_parser("check", help="print structural problems").add_argument("directory")
    args = parser.parse_args(argv)
    if not Path(args.directory).is_dir():
        parser.error(f"not a directory: {args.directory}")
    if args.command == "queries":
        json.dump(queries(args.directory), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    failed = 0
    for name, dashboard in load_dashboards(args.directory).items():
        for problem in problems(dashboard):
            print(f"{name}: {problem}")
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main())
