"""The chart applied to the real API server: install, upgrade, uninstall; every object accepted
(Pod Security `restricted` included: the controllers create the pods) and then gone. The pods are
kept from running (pull policy Never); tests/e2e/node runs the chart and k8s/ for real."""

from __future__ import annotations

from typing import Any

import yaml

from tests.cluster.support import CHART, Kube, wait_until

FULL_VALUES = CHART / "ci" / "full-values.yaml"
RELEASE = "oms"


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and doc.get("kind")]


def ref(doc: dict[str, Any], namespace: str | None = None) -> tuple[str, str, str | None]:
    metadata = doc["metadata"]
    return (doc["kind"], metadata["name"], metadata.get("namespace") or namespace)


def missing(kube: Kube, objects: list[dict[str, Any]], namespace: str | None) -> list[Any]:
    absent = []
    for doc in objects:
        kind, name, ns = ref(doc, namespace)
        resource = f"{kind}.{doc['apiVersion'].split('/')[0]}" if "/" in doc["apiVersion"] else kind
        if kube.get(resource, name, ns if kind not in CLUSTER_SCOPED else None) is None:
            absent.append((kind, name))
    return absent


def present(kube: Kube, objects: list[dict[str, Any]], namespace: str | None) -> list[Any]:
    gone = set(missing(kube, objects, namespace))
    return [ref(doc)[:2] for doc in objects if ref(doc)[:2] not in gone]


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def restricted(kube: Kube, namespace: str) -> None:
    kube.run(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "--overwrite",
    )


def pods_created(kube: Kube, namespace: str) -> dict[str, int]:
    """Deployment -> pods its ReplicaSet created; complete once every one has all its replicas."""
    deployments = kube.json("-n", namespace, "get", "deployments")["items"]
    counts = {}
    for deployment in deployments:
        counts[deployment["metadata"]["name"]] = int(deployment["status"].get("replicas") or 0)
        assert deployment["spec"]["replicas"] >= 1
    return counts


def all_pods_created(kube: Kube, namespace: str) -> dict[str, int] | None:
    deployments = kube.json("-n", namespace, "get", "deployments")["items"]
    for deployment in deployments:
        if int(deployment["status"].get("replicas") or 0) != deployment["spec"]["replicas"]:
            return None
    pods = kube.json("-n", namespace, "get", "pods")["items"]
    assert all(pod["status"]["phase"] == "Pending" for pod in pods)  # never pulled
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in deployments}


def no_failed_creates(kube: Kube, namespace: str) -> None:
    events = kube.json("-n", namespace, "get", "events")["items"]
    failed = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
    assert not failed, failed


def test_helm_install_upgrade_uninstall(
    kube: Kube, namespace: str, crd: dict[str, Any], prometheus_crds: list[str]
) -> None:
    restricted(kube, namespace)
    # The full scenario's images (registry.example.com) are never in the node: with pull policy
    # Never its pods wait (ErrImageNeverPull) instead of running.
    common = [
        "-n",
        namespace,
        "--no-hooks",
        "-f",
        str(FULL_VALUES),
        "--set",
        "image.pullPolicy=Never",
    ]
    kube.helm("install", RELEASE, str(CHART), *common)
    installed = documents(kube.helm("get", "manifest", RELEASE, "-n", namespace).stdout)
    kinds = {doc["kind"] for doc in installed}
    # The full scenario has every optional object, those of the prometheus-operator CRDs too.
    assert {"ServiceMonitor", "PrometheusRule", "OrderSystem", "Ingress", "NetworkPolicy"} <= kinds
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Role", "RoleBinding"} <= kinds
    assert missing(kube, installed, namespace) == []
    # The pods never run here, but the ReplicaSets could create them all:
    # admission (Pod Security `restricted`, service accounts) accepted every pod template.
    created = wait_until(lambda: all_pods_created(kube, namespace), timeout=60)
    assert set(created) >= {"oms-api", "oms-consumer", "oms-worker", "oms-operator"}
    no_failed_creates(kube, namespace)

    # The hooks (migration Job and its ServiceAccount, the test pod) run in tests/e2e/node; here
    # the server accepts them on a dry run.
    hooks = documents(kube.helm("get", "hooks", RELEASE, "-n", namespace).stdout)
    assert {"Job", "ServiceAccount"} <= {doc["kind"] for doc in hooks}
    kube.apply(hooks, "-n", namespace, "--dry-run=server")

    before = kube.json("-n", namespace, "get", "deployment", "oms-consumer")
    kube.helm(
        "upgrade", RELEASE, str(CHART), *common,
        "--set", "consumer.replicaCount=2",
        "--set", "image.tag=0.1.1", "--set", "image.digest=",
        "--set", "config.logLevel=DEBUG",
    )  # fmt: skip
    upgraded = documents(kube.helm("get", "manifest", RELEASE, "-n", namespace).stdout)
    assert missing(kube, upgraded, namespace) == []
    consumer = kube.json("-n", namespace, "get", "deployment", "oms-consumer")
    assert consumer["spec"]["replicas"] == 2
    image = consumer["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/oms/oms-consumer:0.1.1"
    assert consumer["metadata"]["generation"] > before["metadata"]["generation"]
    config = kube.json("-n", namespace, "get", "configmap", "oms")
    assert config["data"]["LOG_LEVEL"] == "DEBUG"

    # The Deployment controller rolls out a new ReplicaSet for the new template, whose pods pass
    # admission too (the rollout itself stalls: these pods are never pulled, so none becomes ready).
    def new_pods() -> int:
        selector = "app.kubernetes.io/component=consumer"
        sets = kube.json("-n", namespace, "get", "rs", "-l", selector)["items"]
        return sum(
            int(rs["status"].get("replicas") or 0)
            for rs in sets
            if rs["spec"]["template"]["spec"]["containers"][0]["image"] == image
        )

    wait_until(new_pods, timeout=30)
    no_failed_creates(kube, namespace)

    kube.helm("uninstall", RELEASE, "-n", namespace, "--no-hooks")
    wait_until(lambda: present(kube, upgraded, namespace) == [] or None, timeout=60)
    # The garbage collector removes what the Deployments owned.
    wait_until(
        lambda: not kube.json("-n", namespace, "get", "rs,pods")["items"] or None, timeout=60
    )
    # Helm keeps CRDs (crds/ is never deleted).
    assert kube.get("crd", "ordersystems.oms.dev") is not None
