"""Check the Grafana dashboards in observability/dashboards/ (run by
tests/observability/test_catalog.py).

Each dashboard must be valid JSON with a stable `uid` (unique across dashboards), a `datasource`
variable of type datasource (Prometheus) used by every panel and target, unique panel ids
(rows and nested panels included), a grid position per panel, and PromQL that parses: every
expression, with Grafana's variables replaced by sample values, goes into a temporary rules
file checked by `promtool check rules` (Prometheus's own parser).

Usage: python observability/check_dashboards.py [--dashboards DIR] [--promtool PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DATASOURCE_REF = "${datasource}"
# Grafana's interval variables become a duration; any other variable sits inside a label
# matcher (`namespace=~"$namespace"`) and becomes a match-all regex.
INTERVAL_VARIABLE = re.compile(r"\$\{?__(rate_interval|interval|range)\}?")
# Their numeric forms (`$__rate_interval_ms`, `$__range_s`) become a number.
NUMBER_VARIABLE = re.compile(r"\$\{?__(rate_interval|interval|range)_(ms|s)\}?")
OTHER_VARIABLE = re.compile(r"\$\{?[A-Za-z_]\w*\}?")


@dataclass(frozen=True)
class Expression:
    dashboard: str
    panel: str
    ref: str
    promql: str


def prometheus_expression(grafana_expr: str) -> str:
    """A Grafana target expression as plain PromQL (variables replaced by sample values)."""
    numbers = NUMBER_VARIABLE.sub(lambda m: "300000" if m[2] == "ms" else "300", grafana_expr)
    return OTHER_VARIABLE.sub(".*", INTERVAL_VARIABLE.sub("5m", numbers))


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_problems(name: str, dashboard: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if not re.fullmatch(r"[a-z0-9-]{1,40}", str(dashboard.get("uid", ""))):
        problems.append(f"{name}: needs a stable `uid` (lowercase, digits, dashes, <= 40)")
    if not dashboard.get("title"):
        problems.append(f"{name}: no title")
    variables = {
        variable.get("name"): variable
        for variable in dashboard.get("templating", {}).get("list", [])
    }
    datasource = variables.get("datasource")
    if (
        datasource is None
        or datasource.get("type") != "datasource"
        or datasource.get("query") != "prometheus"
    ):
        problems.append(f"{name}: needs a `datasource` variable of type datasource (prometheus)")
    panels = list(all_panels(dashboard.get("panels", [])))
    if not panels:
        problems.append(f"{name}: no panels")
    ids = [panel.get("id") for panel in panels]
    duplicates = sorted({str(item) for item in ids if ids.count(item) > 1})
    if duplicates or None in ids:
        problems.append(f"{name}: panel ids must be present and unique (repeated: {duplicates})")
    for panel in panels:
        title = f"{name}: panel {panel.get('id')} {panel.get('title')!r}"
        if not {"x", "y", "w", "h"} <= set(panel.get("gridPos", {})):
            problems.append(f"{title}: incomplete gridPos")
        if panel.get("type") == "row":
            continue
        if not panel.get("title"):
            problems.append(f"{title}: no title")
        if panel.get("datasource", {}).get("uid") != DATASOURCE_REF:
            problems.append(f"{title}: datasource must be {DATASOURCE_REF}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{title}: no targets")
        for target in targets:
            where = f"{title} {target.get('refId')}"
            if target.get("datasource", {}).get("uid") != DATASOURCE_REF:
                problems.append(f"{where}: datasource must be {DATASOURCE_REF}")
            if not str(target.get("expr", "")).strip():
                problems.append(f"{where}: empty expr")
    return problems


def expressions(name: str, dashboard: dict[str, Any]) -> list[Expression]:
    found = [
        Expression(name, str(panel.get("title")), str(target.get("refId")), target["expr"])
        for panel in all_panels(dashboard.get("panels", []))
        for target in panel.get("targets") or []
        if str(target.get("expr", "")).strip()
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, dict):
            # label_values(metric, label) is Grafana's, not PromQL: check the metric selector.
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", str(query.get("query", "")))
            if match:
                found.append(Expression(name, f"variable {variable['name']}", "", match[1]))
    return found


def promql_problems(found: list[Expression], promtool: str) -> list[str]:
    """Parse every expression with promtool; one rule per expression, named after its panel."""
    if not found:
        return []
    rules = [
        {"record": f"dashboard_expr_{index}", "expr": prometheus_expression(item.promql)}
        for index, item in enumerate(found)
    ]
    with tempfile.TemporaryDirectory(prefix="oms-dashboards-") as directory:
        path = Path(directory) / "dashboards.rules.yaml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
        checked = subprocess.run(  # noqa: S603 - our own temporary file, a configured binary
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
    if checked.returncode == 0:
        return []
    output = checked.stdout + checked.stderr
    problems = []
    for index, item in enumerate(found):
        if re.search(rf"\brule {index + 1}\b|\bdashboard_expr_{index}\b", output):
            problems.append(
                f"{item.dashboard}: {item.panel} {item.ref}: PromQL does not parse: {item.promql}"
            )
    return problems or [f"promtool check rules failed:\n{output}"]


def check(directory: Path, promtool: str) -> list[str]:
    problems: list[str] = []
    found: list[Expression] = []
    uids: dict[str, str] = {}
    paths = sorted(directory.glob("*.json"))
    if not paths:
        return [f"no dashboards in {directory}"]
    for path in paths:
        try:
            dashboard = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            problems.append(f"{path.name}: not valid JSON: {error}")
            continue
        problems += dashboard_problems(path.name, dashboard)
        uid = str(dashboard.get("uid"))
        if uid in uids:
            problems.append(f"{path.name}: uid {uid!r} already used by {uids[uid]}")
        uids[uid] = path.name
        found += expressions(path.name, dashboard)
    return problems + promql_problems(found, promtool)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboards", type=Path, default=HERE / "dashboards")
    parser.add_argument("--promtool", default=shutil.which("promtool") or "promtool")
    args = parser.parse_args(argv)
    problems = check(args.dashboards, args.promtool)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    count = len(list(args.dashboards.glob("*.json")))
    print(f"dashboards: {count} checked (JSON, uid, datasource variable, panel ids, PromQL)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
