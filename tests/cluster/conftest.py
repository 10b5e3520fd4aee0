"""One local cluster per test session (scripts/cluster.py, a real one-node Kubernetes): started
here unless it already runs (`make cluster`), and stopped at the end only if this session started
it. tests/images and tests/e2e/node use the same one.

Another cluster instead: OMS_E2E_KUBECONFIG names its kubeconfig (`make pytest` then builds no
control plane); the tests that need our node itself (its build, restarting its API server,
writing to its etcd) are skipped there."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from tests import infra
from tests.cluster.support import (
    CHART,
    CRD_FILE,
    PODS_NEVER_RUN,
    Kube,
    OperatorProcess,
    cluster_script,
    cluster_status,
    external_cluster,
    token_kubeconfig,
    unique,
)
from tests.harness import free_port

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[dict[str, Any]]:
    external = external_cluster()
    if external is not None:
        yield external
        return
    status = cluster_status()
    if not status["built"]:
        pytest.fail("the cluster's tools are not built: `make cluster` builds them (once)")
    started_here = not status["running"]
    if started_here:
        cluster_script("up")
        status = cluster_status()
        assert status["running"], status
    try:
        yield status
    finally:
        if started_here:
            cluster_script("down")


@pytest.fixture(scope="session")
def own_node(control_plane: dict[str, Any]) -> dict[str, Any]:
    """Our node (`make cluster`), for the tests of it or of its control plane's processes."""
    if control_plane.get("external"):
        pytest.skip("needs the node of `make cluster`, not the one OMS_E2E_KUBECONFIG names")
    return control_plane


@pytest.fixture(scope="session")
def kube(control_plane: dict[str, Any]) -> Kube:
    return Kube(Path(control_plane["kubeconfig"]))


@pytest.fixture(scope="session")
def crd(kube: Kube) -> dict[str, Any]:
    """The chart's CRD, applied server-side and Established."""
    kube.run("apply", "--server-side", "-f", str(CRD_FILE))
    kube.run("wait", "--for=condition=Established", "--timeout=60s", "crd/ordersystems.oms.dev")
    return kube.json("get", "crd", "ordersystems.oms.dev")


@pytest.fixture(scope="session")
def prometheus_crds(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """ServiceMonitor and PrometheusRule CRDs as the prometheus-operator module ships them."""
    directory = tmp_path_factory.mktemp("prometheus-crds")
    paths = cluster_script("prometheus-crds", str(directory)).split()
    names = []
    for path in paths:
        kube.run("apply", "--server-side", "-f", path)
        names.append(kube.json("get", "-f", path)["metadata"]["name"])
    for name in names:
        kube.run("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    return names


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = kube.create_namespace(unique("t"))
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


@dataclass
class Release:
    """The chart installed with operator and OrderSystem, and `oms-operator` running with a
    token of the chart's own ServiceAccount."""

    kube: Kube
    sa: Kube  # the operator's ServiceAccount
    namespace: str
    amqp_url: str
    operator: OperatorProcess
    workdir: Path
    metrics_port: int
    name: str = "oms"
    worker: str = "oms-worker"
    key_secret: str = "oms-jwt-keys"
    service_account: str = "oms-operator"


# Short windows so the tests see the whole behaviour within seconds.
TEST_SPEC = {
    "workers": {"pollingInterval": "1s", "scaleDownStabilization": "12s", "maxReplicas": 8},
}


@pytest.fixture(scope="session")
async def release(
    kube: Kube, crd: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Release]:
    from tests.pipeline.support import amqp_url, create_vhost, delete_vhost

    vhost = infra.unique_name("oms_cluster")
    await create_vhost(vhost)
    url = amqp_url(vhost)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue("order_tasks", durable=True)
    namespace = kube.create_namespace(unique("op"))
    kube.create_secret(namespace, "oms-rabbitmq", {"RABBITMQ_URL": url})
    kube.create_secret(namespace, "oms-database", {"POSTGRES_PASSWORD": "not-for-the-operator"})
    kube.helm(
        "install", "oms", str(CHART), "-n", namespace, "--no-hooks", *PODS_NEVER_RUN,
        "--set", "operator.enabled=true", "--set", "orderSystem.enabled=true",
        "--set", "tests.enabled=false", "--set-json", f"orderSystem.spec={json.dumps(TEST_SPEC)}",
    )  # fmt: skip
    token = kube.run(
        "-n", namespace, "create", "token", "oms-operator", "--duration=3h"
    ).stdout.strip()
    directory = tmp_path_factory.mktemp("operator")
    sa = Kube(token_kubeconfig(kube.kubeconfig, token, directory / "kubeconfig", namespace))
    env = {
        "KUBECONFIG": str(sa.kubeconfig),
        "OPERATOR_NAMESPACES": namespace,
        "OPERATOR_METRICS_HOST": "127.0.0.1",
        "OPERATOR_METRICS_PORT": str(free_port()),
        "OPERATOR_LIVENESS_HOST": "127.0.0.1",
        "OPERATOR_LIVENESS_PORT": str(free_port()),
        "OPERATOR_KEY_RESYNC_SECONDS": "1",
        "OPERATOR_MAX_BACKOFF_SECONDS": "2",
        # The API server ends each watch after 5 s, so every test below also runs across many
        # watch renewals: an event lost between two watches would fail one of them.
        "OPERATOR_WATCH_SERVER_TIMEOUT_SECONDS": "5",
        "OPERATOR_WATCH_CLIENT_TIMEOUT_SECONDS": "15",
        "OPERATOR_LOG_LEVEL": "INFO",
    }
    operator = OperatorProcess(env, directory / "operator.log").start()
    try:
        yield Release(
            kube, sa, namespace, url, operator, directory, int(env["OPERATOR_METRICS_PORT"])
        )
    finally:
        operator.stop()
        kube.run("delete", "namespace", namespace, "--wait=false", check=False)
        await delete_vhost(vhost)
