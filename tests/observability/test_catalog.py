"""Static checks that tie the metrics, the docs, the rules, the runbooks and the dashboards
together (fast; the end-to-end tests check the same against running services)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import Counter, Gauge, Histogram

import oms.observability.pipeline_metrics
import oms_api.http_metrics
import oms_consumer.consumer_metrics
import oms_worker.task_metrics
from tests.observability.prometheus_server import ROOT

OBSERVABILITY = ROOT / "observability"
RULES = OBSERVABILITY / "prometheus" / "oms.rules.yaml"
RULE_TESTS = sorted((OBSERVABILITY / "prometheus" / "tests").glob("*.yaml"))
DASHBOARD = OBSERVABILITY / "dashboards" / "overview.json"
DOCS = ROOT / "docs" / "observability.md"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
CHECKER = OBSERVABILITY / "check_dashboards.py"
METRIC_MODULES = (
    oms_api.http_metrics,
    oms.observability.pipeline_metrics,
    oms_consumer.consumer_metrics,
    oms_worker.task_metrics,
)
# Our metric names as used in PromQL (recording rules `oms:...` excluded: no underscore after
# the prefix colon), the operator's own excluded (tests/operator checks those).
USED_NAME = re.compile(r"\boms_(?!operator_)[a-z_]+\b")


def exported() -> dict[str, set[str]]:
    """Metric name -> the sample names Prometheus will see for it."""
    names: dict[str, set[str]] = {}
    for module in METRIC_MODULES:
        for value in vars(module).values():
            if isinstance(value, Counter):
                names[f"{value._name}_total"] = {f"{value._name}_total"}
            elif isinstance(value, Histogram):
                names[value._name] = {f"{value._name}_{s}" for s in ("bucket", "count", "sum")}
            elif isinstance(value, Gauge):
                names[value._name] = {value._name}
    return names


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def heading_anchors(markdown: str) -> set[str]:
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 -]", "", title).replace(" ", "-"))
    return anchors


def test_the_metric_table_in_the_docs_is_exactly_what_the_services_export() -> None:
    documented = set(re.findall(r"^\| `(oms_[a-z_]+)` \|", DOCS.read_text(), re.MULTILINE))
    names = set(exported())
    assert len(names) >= 25
    assert documented - names == set(), "documented but not exported"
    assert names - documented == set(), "exported but not documented"


def test_names_follow_prometheus_conventions() -> None:
    for module in METRIC_MODULES:
        for value in vars(module).values():
            if isinstance(value, Counter | Gauge | Histogram):
                assert value._name.startswith("oms_"), value._name
                assert not value._name.endswith("_total"), value._name  # the client adds it
            if isinstance(value, Histogram):
                assert value._name.endswith("_seconds"), value._name


def test_rules_and_dashboard_only_use_exported_metrics() -> None:
    samples = set().union(*exported().values())
    used = set(USED_NAME.findall(RULES.read_text())) | set(USED_NAME.findall(DASHBOARD.read_text()))
    assert len(used) >= 20
    assert used - samples == set()


def test_every_alert_is_complete_links_its_runbook_and_has_a_unit_test() -> None:
    anchors = heading_anchors(RUNBOOKS.read_text())
    tested = "\n".join(path.read_text() for path in RULE_TESTS)
    rules = alerts()
    assert {rule["alert"] for rule in rules} >= {
        "OmsApiHighErrorRate",
        "OmsApiErrorBudgetBurnFast",
        "OmsApiLatencyBudgetBurnFast",
        "OmsDeadLetterQueueNotEmpty",
        "OmsQueueDepthGrowing",
        "OmsOutboxBacklogStale",
        "OmsServiceDown",
    }
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert annotations["description"].strip(), name
        path, anchor = annotations["runbook_url"].split("#")
        assert path == "docs/runbooks.md", name
        assert anchor in anchors, f"{name}: no section #{anchor} in docs/runbooks.md"
        assert re.search(rf"alertname: {name}\b", tested), f"{name} has no promtool unit test"


def test_the_dashboard_checker_rejects_what_it_should(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    panels[0]["targets"][0]["expr"] = "sum(rate(oms_http_requests_total[$__rate_interval])"
    panels[1]["id"] = panels[2]["id"]
    panels[3]["datasource"] = {"type": "prometheus", "uid": "prometheus"}
    dashboard["templating"]["list"] = []
    (tmp_path / "broken.json").write_text(json.dumps(dashboard))
    (tmp_path / "not-json.json").write_text("{")

    def run(directory: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(CHECKER), "--dashboards", str(directory)],
            capture_output=True,
            text=True,
            check=False,
        )

    broken = run(tmp_path)
    assert broken.returncode == 1
    assert f"{panels[0]['title']} A: PromQL does not parse" in broken.stderr
    assert "panel ids must be present and unique" in broken.stderr
    assert f"{panels[3]['title']!r}: datasource must be" in broken.stderr
    assert "needs a `datasource` variable" in broken.stderr
    assert "not-json.json: not valid JSON" in broken.stderr
    assert run(DASHBOARD.parent).returncode == 0
