"""The node itself: pods resolve cluster names and nothing else, reach the cluster and nothing
else, and an image that is not in the node fails to start instead of being fetched from afar."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests.cluster.support import Kube, wait_until
from tests.e2e.node.support import create_namespace


@pytest.fixture(autouse=True)
def _our_node_only(node: dict[str, Any]) -> None:
    if node.get("external"):
        pytest.skip("checks of the node `make cluster` builds (addresses, DNS, confinement)")


# A pod that meets the `restricted` Pod Security Standard, running Python from the API image.
PROBE_IMAGE = "ghcr.io/oms-project/oms-api"


def probe_pod(name: str, image: str, script: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "command": ["python", "-c", script],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = create_namespace(kube, "node")
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


def run_probe(kube: Kube, namespace: str, image: str, script: str) -> str:
    """Run `script` in a pod to completion; its output."""
    kube.run(
        "-n", namespace, "apply", "-f", "-", stdin=json.dumps(probe_pod("probe", image, script))
    )

    def finished() -> str | None:
        pod = kube.json("-n", namespace, "get", "pod", "probe")
        phase = pod["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(finished, timeout=60, interval=0.5)
    output = kube.run("-n", namespace, "logs", "probe").stdout
    assert phase == "Succeeded", output
    return output


def probe_each(
    kube: Kube, namespace: str, image: str, expression: str, inputs: dict[str, str]
) -> dict[str, str]:
    """Evaluate `expression` (Python, of `value`) in a pod for each input: its result, or the
    name of the OSError it raised."""
    script = (
        "import json, socket\n"
        f"inputs = {json.dumps(inputs)}\n"
        "def attempt(value):\n"
        "    try:\n"
        f"        return {expression}\n"
        "    except OSError as error:\n"
        "        return type(error).__name__\n"
        "print(json.dumps({key: attempt(value) for key, value in inputs.items()}))\n"
    )
    answers: dict[str, str] = json.loads(run_probe(kube, namespace, image, script).splitlines()[-1])
    return answers


def test_the_node_is_ready_with_its_addresses(kube: Kube, node: dict[str, Any]) -> None:
    described = kube.json("get", "node", node["node"])
    addresses = {a["type"]: a["address"] for a in described["status"]["addresses"]}
    assert addresses["InternalIP"] == node["node_ip"]
    ready = [c for c in described["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"


def test_pods_resolve_cluster_names_and_nothing_else(
    kube: Kube, namespace: str, node_images: list[str]
) -> None:
    image = next(name for name in node_images if name.startswith(PROBE_IMAGE))
    names = [
        "kubernetes.default.svc.cluster.local",
        "kube-dns.kube-system",
        "example.com",
        "pypi.org",
    ]
    answers = probe_each(
        kube, namespace, image, "socket.gethostbyname(value)", {n: n for n in names}
    )
    assert answers["kubernetes.default.svc.cluster.local"] == "10.96.0.1"
    assert answers["kube-dns.kube-system"] == "10.96.0.10"
    # No `forward` in the cluster's DNS: outside names are never asked for.
    assert answers["example.com"] == "gaierror"
    assert answers["pypi.org"] == "gaierror"


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP server on every address of the host, answering each connection with b"host"."""
    server = socket.create_server(("0.0.0.0", 0))
    port = int(server.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.sendall(b"host")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join()
    server.close()


def machine_address() -> str:
    """The host's address on its own network (not loopback, not the cluster's bridge)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route's source
        return str(probe.getsockname()[0])


def test_pods_reach_the_node_but_nothing_off_the_cluster(
    kube: Kube, namespace: str, node: dict[str, Any], node_images: list[str], host_listener: int
) -> None:
    image = next(name for name in node_images if name.startswith(PROBE_IMAGE))
    targets = {"node": node["node_ip"], "machine": machine_address()}
    assert targets["machine"] != targets["node"]
    connect = f"socket.create_connection((value, {host_listener}), timeout=3).recv(4).decode()"
    reached = probe_each(kube, namespace, image, connect, targets)
    # The same listener: the node's bridge address answers, the machine's own address does not
    # (the packet is dropped on its way out of the pod network).
    assert reached["node"] == "host"
    assert reached["machine"] in {"TimeoutError", "timeout"}


def test_an_image_not_in_the_node_is_never_fetched(kube: Kube, namespace: str) -> None:
    script = "print('unreachable')"
    pod = probe_pod("probe", "registry.example.org/not/here:1", script)
    kube.run("-n", namespace, "apply", "-f", "-", stdin=json.dumps(pod))

    def pull_failure() -> str | None:
        events = kube.json("-n", namespace, "get", "events")["items"]
        failed = [e["message"] for e in events if e.get("reason") == "Failed"]
        return failed[0] if failed else None

    message = wait_until(pull_failure, timeout=60, interval=0.5)
    # containerd's only way out is a proxy on a loopback port where nothing listens.
    assert "proxyconnect tcp: dial tcp 127.0.0.1:9" in message, message
