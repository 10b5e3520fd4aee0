"""The dashboard and alerts use metrics that exist, and every alert has a runbook section."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client import Counter, Gauge

from oms_operator import operator_metrics
from tests.observability.test_catalog import heading_anchors
from tests.operator.crd import ROOT

DASHBOARD = ROOT / "observability" / "dashboards" / "operator.json"
RULES = ROOT / "observability" / "prometheus" / "operator.rules.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
METRIC_NAME = re.compile(r"\boms_operator_[a-z_]+\b")


def exported_names() -> set[str]:
    names: set[str] = set()
    for value in vars(operator_metrics).values():
        if isinstance(value, Counter):
            names.add(f"{value._name}_total")
        elif isinstance(value, Gauge):
            names.add(value._name)
    return names


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alerts_are_complete_and_link_to_existing_runbook_sections() -> None:
    anchors = heading_anchors(RUNBOOKS.read_text())
    alerts = {rule["alert"]: rule for rule in rules()}
    assert {
        "OmsWorkersScalingStuckAtMax",
        "OmsJwtKeyRotationOverdue",
        "OmsWorkerQueueUnreadable",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        annotations = rule["annotations"]
        assert annotations["summary"], name
        assert annotations["description"], name
        path, anchor = annotations["runbook_url"].split("#")
        assert path == "docs/runbooks.md", name
        assert anchor in anchors, f"{name}: no section #{anchor} in docs/runbooks.md"


def test_rules_and_dashboard_only_use_metrics_the_operator_exports() -> None:
    exported = exported_names()
    assert len(exported) >= 12
    used_in_rules = {name for rule in rules() for name in METRIC_NAME.findall(rule["expr"])}
    used_in_dashboard = set(METRIC_NAME.findall(DASHBOARD.read_text()))
    assert used_in_rules
    assert used_in_dashboard
    assert used_in_rules - exported == set()
    assert used_in_dashboard - exported == set()


def test_dashboard_has_a_stable_uid_a_datasource_variable_and_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "oms-operator"
    variables = {item["name"]: item for item in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len(panels) >= 8
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert "$namespace" in target["expr"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
