"""The node suite's stand-in for the Prometheus Operator (tests/e2e/node/monitoring.py), held
against the chart as `helm template` renders it, without a cluster: the scrape jobs made from the
ServiceMonitor, run through Prometheus' relabelling over the targets Kubernetes service discovery
would find for the chart's Services and pods, keep exactly one target per component with the
labels the dashboards select on; the rule file made from the PrometheusRules is the rules files
of observability/prometheus, unchanged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from observability.check_dashboards import all_panels

from tests.deploy.chart import CHART, REPO, Document, find, helm, pod_spec
from tests.e2e.node.monitoring import (
    MONITORED_RELEASE_SETS,
    endpoints_targets,
    file_sd_jobs,
    rule_file,
    scrape_configs,
)

COMPONENTS = ("api", "consumer", "worker", "operator")
KUBECONFIG = Path("/nonexistent/kubeconfig")  # only written into the job, never read here
DASHBOARDS = sorted((REPO / "observability" / "dashboards").glob("*.json"))
RULE_FILES = sorted((REPO / "observability" / "prometheus").glob("*.rules.yaml"))
# `up{...}` selectors in the dashboards: the series the ServiceMonitor's labels must satisfy.
UP_SELECTOR = re.compile(r"\bup\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def rendered(release: str) -> list[Document]:
    argv = ["template", release, str(CHART), "--namespace", release]
    for assignment in MONITORED_RELEASE_SETS:
        argv += ["--set", assignment]
    result = helm(*argv)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def cluster_objects(docs: list[Document], namespace: str) -> dict[str, list[Document]]:
    """The Services as rendered, one running pod per Deployment, and the Endpoints the
    endpoints controller would make of them (named target ports resolved to numbers)."""
    pods = []
    for index, deployment in enumerate(find(docs, "Deployment")):
        template = deployment["spec"]["template"]
        name = f"{deployment['metadata']['name']}-5d9c7-x2x4q"
        pods.append(
            {
                "metadata": {"name": name, "namespace": namespace, "uid": name,
                             "labels": template["metadata"]["labels"]},
                "spec": {**pod_spec(deployment), "nodeName": "oms-node"},
                "status": {"phase": "Running", "podIP": f"10.244.0.{10 + index}"},
            }
        )  # fmt: skip
    endpoints = []
    for service in find(docs, "Service"):
        selector = service["spec"].get("selector") or {}
        chosen = [pod for pod in pods if selector.items() <= pod["metadata"]["labels"].items()]
        subsets = []
        for pod in chosen:
            ports = [
                {"name": port["name"], "port": container_port["containerPort"], "protocol": "TCP"}
                for port in service["spec"]["ports"]
                for container in pod["spec"]["containers"]
                for container_port in container.get("ports", [])
                if container_port.get("name") == port["targetPort"]
            ]
            address = {
                "ip": pod["status"]["podIP"],
                "targetRef": {"kind": "Pod", "name": pod["metadata"]["name"]},
            }
            subsets.append({"addresses": [address], "ports": ports})
        endpoints.append({"metadata": service["metadata"], "subsets": subsets})
    return {"Service": find(docs, "Service"), "Endpoints": endpoints, "Pod": pods}


def discovered(docs: list[Document], namespace: str) -> list[dict[str, str]]:
    """What monitoring.endpoints_targets (the node suite's stand-in for Kubernetes discovery,
    role `endpoints`) reports for the rendered objects: one target per address and port."""
    objects = cluster_objects(docs, namespace)
    groups = endpoints_targets(namespace, objects["Service"], objects["Endpoints"], objects["Pod"])
    return [
        {**group["labels"], "__address__": target}
        for group in groups
        for target in group["targets"]
    ]


def relabel(job: dict[str, Any], target: dict[str, str]) -> dict[str, str] | None:
    """Prometheus' relabelling of one discovered target (keep, drop, replace; anchored
    regexes), then its final labels; None when the target is dropped."""
    labels = {**target, "job": job["job_name"]}
    for rule in job["relabel_configs"]:
        action = rule.get("action", "replace")
        value = rule.get("separator", ";").join(
            labels.get(s, "") for s in rule.get("source_labels", [])
        )
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if (action == "keep" and match is None) or (action == "drop" and match is not None):
            return None
        if action == "replace" and match is not None:
            replacement = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", rule.get("replacement", "$1"))
            labels[rule["target_label"]] = match.expand(replacement)
        assert action in {"keep", "drop", "replace"}, action
    labels.setdefault("instance", labels["__address__"])
    return {key: value for key, value in labels.items() if not key.startswith("__")}


def scraped(docs: list[Document]) -> list[tuple[dict[str, Any], dict[str, str]]]:
    (monitor,) = find(docs, "ServiceMonitor")
    namespace = monitor["metadata"]["namespace"]
    jobs = scrape_configs(monitor, KUBECONFIG)
    targets = discovered(docs, namespace)
    return [
        (job, labels)
        for job in jobs
        for target in targets
        if (labels := relabel(job, target)) is not None
    ]


def selects(selector: str, labels: dict[str, str], variables: dict[str, str]) -> bool:
    for name, op, value in MATCHER.findall(selector):
        value = re.sub(r"\$(\w+)", lambda m: variables[m[1]], value).replace("\\\\", "\\")
        actual = labels.get(name, "")
        matched = re.fullmatch(value, actual) is not None if "~" in op else actual == value
        if matched != (op in {"=", "=~"}):
            return False
    return True


@pytest.mark.parametrize("release", ["oms", "shop"])
def test_the_servicemonitor_keeps_one_target_per_component(release: str) -> None:
    docs = rendered(release)
    fullname = release if "oms" in release else f"{release}-oms"
    found = scraped(docs)
    assert sorted(labels["job"] for _, labels in found) == sorted(
        f"{fullname}-{component}-metrics" for component in COMPONENTS
    )
    for job, labels in found:
        component = labels["job"].removeprefix(f"{fullname}-").removesuffix("-metrics")
        assert job["metrics_path"] == "/metrics"
        assert job["scrape_interval"] == "2s"
        assert job["kubernetes_sd_configs"][0]["namespaces"] == {"names": [release]}
        assert labels["namespace"] == release
        assert labels["service"] == labels["job"]
        assert labels["endpoint"] == "metrics"
        assert labels["pod"].startswith(f"{fullname}-{component}-")
        assert labels["container"]  # the container serving the port, by its name
    # The API's client Service matches the selector too, but has no `metrics` port.
    assert not [labels for _, labels in found if labels["service"] == f"{fullname}-api"]


@pytest.mark.parametrize("release", ["oms", "shop"])
def test_every_up_selector_in_the_dashboards_selects_a_scraped_target(release: str) -> None:
    targets = [labels for _, labels in scraped(rendered(release))]
    variables = {"namespace": release, "ordersystem": release}
    checked = 0
    for path in DASHBOARDS:
        for panel in all_panels(json.loads(path.read_text())["panels"]):
            for target in panel.get("targets") or []:
                for selector in UP_SELECTOR.findall(target["expr"]):
                    chosen = [t["job"] for t in targets if selects(selector, t, variables)]
                    assert chosen, (
                        f"{path.name} {panel['title']!r}: up{{{selector}}} selects nothing"
                    )
                    if "worker" in selector:
                        assert all("worker" in job for job in chosen), (selector, chosen)
                    checked += 1
    assert checked >= 2


def test_the_rule_file_is_the_rules_files_unchanged() -> None:
    rules = find(rendered("oms"), "PrometheusRule")
    assert len(rules) == len(RULE_FILES)
    expected = [
        group for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert sorted(rule_file(rules)["groups"], key=lambda g: g["name"]) == sorted(
        expected, key=lambda g: g["name"]
    )


def test_the_jobs_read_the_discovery_files_of_their_namespaces(tmp_path: Path) -> None:
    (monitor,) = find(rendered("shop"), "ServiceMonitor")
    jobs = scrape_configs(monitor, KUBECONFIG)
    replaced = file_sd_jobs(jobs, tmp_path)
    for job, read in zip(jobs, replaced, strict=True):
        assert "kubernetes_sd_configs" not in read
        assert read["file_sd_configs"][0]["files"] == [str(tmp_path / "shop.json")]
        assert read["relabel_configs"] == job["relabel_configs"]
