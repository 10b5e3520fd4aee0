"""The plain manifests (k8s/), the chart's copies of observability files, and the validation
itself: each check is run for real and shown to fail on a broken input."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.deploy.chart import CHART, KUBECTL, REPO, SCRIPTS, render, run_script, scenario_files

CRD = CHART / "crds" / "ordersystems.oms.dev.yaml"


def test_k8s_is_rendered_from_the_current_chart(tmp_path: Path) -> None:
    result = run_script("render-manifests.py", "--check")
    assert result.returncode == 0, result.stderr
    # The same check on a copy with one edited file must fail.
    copy_dir = tmp_path / "k8s"
    shutil.copytree(REPO / "k8s", copy_dir)
    stack = copy_dir / "stack.yaml"
    stack.write_text(stack.read_text().replace("replicas: 2", "replicas: 7", 1))
    stale = run_script("render-manifests.py", "--check", "--out", str(copy_dir))
    assert stale.returncode == 1
    assert "stack.yaml is stale" in stale.stderr


def test_the_chart_holds_the_only_crd_and_k8s_a_marked_copy(tmp_path: Path) -> None:
    copy = (REPO / "k8s" / "crds" / CRD.name).read_text()
    marker, warning, body = copy.split("\n", 2)
    assert marker.startswith(f"# Copy of charts/oms/crds/{CRD.name}, the CRD's only source")
    assert warning.startswith("# Do not edit")
    assert body == CRD.read_text()
    # Editing the copy instead of the source is caught.
    copy_dir = tmp_path / "k8s"
    shutil.copytree(REPO / "k8s", copy_dir)
    (copy_dir / "crds" / CRD.name).write_text(copy.replace("maxReplicas", "maxReplica", 1))
    stale = run_script("render-manifests.py", "--check", "--out", str(copy_dir))
    assert stale.returncode == 1
    assert f"crds/{CRD.name} is stale" in stale.stderr


def test_kubectl_kustomize_builds_the_whole_system() -> None:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(REPO / "k8s")], capture_output=True, text=True, check=True
    )
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    kinds = {doc["kind"] for doc in docs}
    assert {"Namespace", "CustomResourceDefinition", "OrderSystem", "Job"} <= kinds
    deployments = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Deployment"}
    assert deployments == {"oms-api", "oms-consumer", "oms-worker", "oms-operator"}
    for doc in docs:
        metadata = doc["metadata"]
        assert not any(key.startswith("helm.sh/") for key in metadata.get("annotations", {}))
        if doc["kind"] not in (
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
        ):
            assert metadata["namespace"] == "oms", f"{doc['kind']}/{metadata['name']}"
    assert not [doc for doc in docs if doc["kind"] == "Pod"], "helm test pods are not for kubectl"
    namespace = next(doc for doc in docs if doc["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_chart_files_track_observability(tmp_path: Path) -> None:
    assert run_script("sync-chart-files.py", "--check").returncode == 0
    source = tmp_path / "observability"
    chart_files = tmp_path / "files"
    (source / "dashboards").mkdir(parents=True)
    (source / "prometheus").mkdir(parents=True)
    (source / "dashboards" / "orders.json").write_text('{"title": "Orders"}\n')
    rules = {"groups": [{"name": "oms", "rules": [{"alert": "X", "expr": "up == 0"}]}]}
    (source / "prometheus" / "oms.rules.yaml").write_text(yaml.safe_dump(rules))
    args = ["--source", str(source), "--chart-files", str(chart_files)]
    stale = run_script("sync-chart-files.py", "--check", *args)
    assert stale.returncode == 1
    assert "orders.json" in stale.stderr
    assert run_script("sync-chart-files.py", *args).returncode == 0
    assert run_script("sync-chart-files.py", "--check", *args).returncode == 0
    (source / "dashboards" / "orders.json").write_text('{"title": "Orders v2"}\n')
    assert run_script("sync-chart-files.py", "--check", *args).returncode == 1
    (source / "dashboards" / "orders.json").unlink()
    removed = run_script("sync-chart-files.py", "--check", *args)
    assert removed.returncode == 1
    assert "no longer in observability/" in removed.stderr
    (source / "prometheus" / "oms.rules.yaml").write_text("not: [a rules file]\n")
    broken = run_script("sync-chart-files.py", *args)
    assert broken.returncode != 0
    assert "groups" in broken.stderr


def test_dashboards_and_rules_render_from_chart_files(tmp_path: Path) -> None:
    """Copy the chart, drop a dashboard and a rules file in, render with the real helm."""
    chart = tmp_path / "oms"
    shutil.copytree(CHART, chart)
    (chart / "files" / "dashboards" / "orders.json").write_text('{"title": "Orders"}')
    rules = {"groups": [{"name": "oms", "rules": [{"alert": "ApiDown", "expr": "up == 0"}]}]}
    (chart / "files" / "prometheus" / "api.rules.yaml").write_text(yaml.safe_dump(rules))
    from tests.deploy.chart import HELM

    result = subprocess.run(
        [HELM, "template", "oms", str(chart), "--values", str(CHART / "ci" / "full-values.yaml")],
        capture_output=True,
        text=True,
        check=True,
    )
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    dashboard = next(d for d in docs if d["metadata"]["name"] == "oms-dashboard-orders")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["orders.json"] == '{"title": "Orders"}'
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert rule["spec"] == rules


def test_check_chart_lints_and_validates_every_scenario() -> None:
    """`helm lint --strict` and validation of every rendered object, for each values scenario."""
    result = run_script("check-chart.py")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ["default", *(path.name for path in scenario_files())]:
        assert re.search(rf"  {re.escape(name)}: lint ok, \d+ documents", result.stdout), name


def test_kubernetes_validate_is_strict() -> None:
    deployment = next(d for d in render() if d["kind"] == "Deployment")
    kubernetes_validate.validate(deployment, "1.35.0", strict=True)
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.35.0", strict=True)


def _load_deploylib() -> Any:
    sys.path.insert(0, str(SCRIPTS))
    try:
        import deploylib
    finally:
        sys.path.remove(str(SCRIPTS))
    return deploylib


def _ordersystems() -> list[dict[str, Any]]:
    examples = sorted((REPO / "operator" / "examples").glob("*.yaml"))
    docs = [doc for path in examples for doc in yaml.safe_load_all(path.read_text()) if doc]
    docs += [d for d in render([CHART / "ci" / "full-values.yaml"]) if d["kind"] == "OrderSystem"]
    docs += [d for d in yaml.safe_load_all((REPO / "k8s" / "ordersystem.yaml").read_text()) if d]
    return docs


def test_ordersystems_match_the_crd_schema_and_broken_ones_do_not() -> None:
    assert CRD.is_file(), f"{CRD} is written with the operator"
    deploylib = _load_deploylib()
    schema = deploylib.ordersystem_schema()
    assert schema is not None
    ordersystems = _ordersystems()
    assert len(ordersystems) >= 3
    for doc in ordersystems:
        assert deploylib.validate_ordersystem(doc, schema) == [], doc["metadata"]["name"]
    valid = ordersystems[0]
    broken_variants: list[dict[str, Any]] = []
    typo = copy.deepcopy(valid)
    typo["spec"]["workers"]["maxReplica"] = 3
    broken_variants.append(typo)
    wrong_type = copy.deepcopy(valid)
    wrong_type["spec"]["workers"]["minReplicas"] = "one"
    broken_variants.append(wrong_type)
    missing = copy.deepcopy(valid)
    del missing["spec"]["rabbitmq"]
    broken_variants.append(missing)
    bad_duration = copy.deepcopy(valid)
    bad_duration["spec"].setdefault("jwt", {})["rotationInterval"] = "30 days"
    broken_variants.append(bad_duration)
    for broken in broken_variants:
        assert deploylib.validate_ordersystem(broken, schema), broken["spec"]
    report = deploylib.validate_documents([typo], schema)
    assert report.errors
    assert "maxReplica" in report.errors[0]


def test_schema_conversion_is_a_valid_json_schema() -> None:
    deploylib = _load_deploylib()
    schema = deploylib.ordersystem_schema()
    jsonschema.Draft7Validator.check_schema(deploylib._structural(schema))
