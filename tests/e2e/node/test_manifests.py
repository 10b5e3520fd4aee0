"""The plain manifests (`kubectl apply -k k8s/`, as docs/kubernetes.md shows) reach the same
working state as the chart: migration Job, operator, keys, API, consumer and worker, an order
processed; applying again changes nothing; deleting removes everything but the CRD.

And `helm uninstall` leaves nothing of the release behind but what the docs say stays: the CRD
(Helm never deletes crds/), and what the user made (namespace, Secrets, backing services)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.cluster.support import REPO, Kube, wait_until
from tests.e2e.node.support import (
    BACKING_SERVICES,
    Release,
    dev_credentials,
    install,
)
from tests.pipeline.support import eventually

K8S = REPO / "k8s"
NAMESPACE = "oms"  # k8s/ is rendered for it


@pytest.fixture
def manifests_namespace(kube: Kube, node_images: list[str]) -> Iterator[str]:
    assert kube.get("namespace", NAMESPACE) is None, "namespace oms exists: not a fresh cluster"
    yield NAMESPACE
    kube.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def api_service_url(kube: Kube) -> str:
    ip = kube.run("-n", NAMESPACE, "get", "service", "oms-api", "-o", "jsonpath={.spec.clusterIP}")
    return f"http://{ip.stdout.strip()}:8000"


async def test_kubectl_apply_k8s_reaches_a_working_system(
    kube: Kube, manifests_namespace: str
) -> None:
    started = time.monotonic()
    # The steps of docs/kubernetes.md ("Plain manifests"), on the node with its dev services.
    kube.run("apply", "-f", str(K8S / "namespace.yaml"))
    kube.run("-n", NAMESPACE, "apply", "-f", str(BACKING_SERVICES))
    password = dev_credentials()["POSTGRES_PASSWORD"]
    kube.create_secret(NAMESPACE, "oms-database", {"POSTGRES_PASSWORD": password})
    kube.create_secret(
        NAMESPACE,
        "oms-rabbitmq",
        {
            "RABBITMQ_URL": f"amqp://oms:{password}@rabbitmq:5672/",
            "RABBITMQ_MANAGEMENT_URL": f"http://oms:{password}@rabbitmq:15672/",
        },
    )
    kube.run("apply", "--server-side", "-k", str(K8S / "crds"))
    kube.run("wait", "--for=condition=Established", "crd/ordersystems.oms.dev")
    kube.run("apply", "--server-side", "-k", str(K8S))
    kube.run(
        "-n", NAMESPACE, "wait", "--for=condition=Complete", "job/oms-migrations", "--timeout=180s"
    )
    kube.run(
        "-n",
        NAMESPACE,
        "wait",
        "--for=condition=Available",
        "deployment",
        "--all",
        "--timeout=180s",
    )
    ready_after = time.monotonic() - started

    pods = kube.json("-n", NAMESPACE, "get", "pods")["items"]
    running = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods}
    assert {"api", "consumer", "worker", "operator"} <= running
    assert kube.get("secret", "oms-jwt-keys", NAMESPACE) is not None

    async with httpx.AsyncClient(base_url=api_service_url(kube), timeout=30) as http:
        email = f"manifests-{int(time.time())}@example.com"
        registered = await http.post("/register", json={"email": email, "password": "secret123"})
        assert registered.status_code == 201, registered.text
        token = (
            await http.post("/token", data={"username": email, "password": "secret123"})
        ).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        body = {"items": [{"name": "book", "quantity": 1}], "total_price": "9.90"}
        created = await http.post("/orders/", json=body, headers=headers)
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]

        async def processed() -> bool:
            seen = await http.get(f"/orders/{order_id}/", headers=headers)
            return seen.json()["processed_at"] is not None

        await eventually(processed, timeout=60, interval=0.5, message="order processed")

    # A second apply is clean: nothing to change, nothing in conflict.
    again = kube.run("apply", "--server-side", "-k", str(K8S))
    assert "conflict" not in again.stderr.lower()
    print(f"\nk8s/: working in {ready_after:.0f} s")


def release_objects(kube: Kube, namespace: str) -> list[str]:
    """Every namespaced object labelled as the release's, of every kind the server lists."""
    kinds = kube.run("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout.split()
    kinds = [kind for kind in kinds if kind not in ("events", "events.events.k8s.io")]
    listed = kube.run(
        "-n",
        namespace,
        "get",
        ",".join(kinds),
        "-l",
        "app.kubernetes.io/instance=oms",
        "-o",
        "name",
    )
    return listed.stdout.split()


def test_helm_uninstall_leaves_only_what_the_docs_say(
    kube: Kube, node: dict[str, Any], node_images: list[str]
) -> None:
    release: Release = install(kube, node, "uninstall")
    try:
        assert release_objects(kube, release.namespace)
        assert kube.get("secret", "oms-jwt-keys", release.namespace) is not None
        release.helm("uninstall", release.name, "--wait", "--timeout", "3m")
        # The operator's key Secret belongs to the OrderSystem: the garbage collector follows.
        wait_until(
            lambda: kube.get("secret", "oms-jwt-keys", release.namespace) is None, timeout=60
        )
        wait_until(lambda: not release_objects(kube, release.namespace), timeout=60)
        pods = kube.json("-n", release.namespace, "get", "pods")["items"]
        names = {p["metadata"]["labels"].get("app.kubernetes.io/name") for p in pods}
        assert names == {"postgresql", "redis", "rabbitmq"}, names
        # Helm never deletes what crds/ installed: the CRD stays for other releases.
        assert kube.get("crd", "ordersystems.oms.dev") is not None
        secrets = json.loads(
            kube.run("-n", release.namespace, "get", "secrets", "-o", "json").stdout
        )
        assert [s["metadata"]["name"] for s in secrets["items"]] == ["oms-dev-credentials"]
    finally:
        kube.run("delete", "namespace", release.namespace, "--wait=false", check=False)
