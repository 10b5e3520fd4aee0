"""The end-to-end suite on the one-node cluster (marker `node`): the node of `make cluster`
(started for the session unless it runs), the images `make images` builds loaded into it, and
one release of the chart per test module (tests/e2e/node/support.py: `install`).

Another cluster instead (kind, k3s, a cloud one): OMS_E2E_KUBECONFIG names its kubeconfig,
OMS_E2E_INGRESS_URL and OMS_E2E_INGRESS_CLASS its ingress controller, and OMS_E2E_LOAD_IMAGES a
command that puts one image into it (e.g. `kind load docker-image`; unset: the images must be
pullable there). See docs/kubernetes.md ("Running the suite on another cluster")."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The session's cluster (tests/cluster) and image build (tests/images): one of each per session.
# control_plane is the cluster OMS_E2E_KUBECONFIG names when it is set.
from tests.cluster.conftest import (
    control_plane,  # noqa: F401 (requested by `node`)
    own_node,  # noqa: F401 (tests that reach into this host's node)
    prometheus_crds,  # noqa: F401 (monitored releases)
)
from tests.cluster.support import CLUSTER_SCRIPT, REPO, Kube
from tests.e2e.node.support import Release, install, remove
from tests.images.conftest import BuiltImages, built  # noqa: F401
from tests.images.support import images_script

HERE = Path(__file__).resolve().parent
FIGURES: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.node)
            # The first test waits for the images (minutes from nothing) and its release.
            item.add_marker(pytest.mark.timeout(1200))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("one-node cluster figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def node(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The cluster, Ready (a restarted API server, e.g. by tests/cluster, leaves the node
    NotReady for a while): ours (`make cluster`), or the one OMS_E2E_KUBECONFIG names."""
    cluster = request.getfixturevalue("control_plane")
    kube = Kube(Path(cluster["kubeconfig"]))
    kube.run("wait", "--for=condition=Ready", "node", "--all", "--timeout=180s")
    return dict(cluster)


@pytest.fixture(scope="session")
def kube(node: dict[str, Any]) -> Kube:
    return Kube(Path(node["kubeconfig"]))


@pytest.fixture(scope="session")
def node_images(node: dict[str, Any], built: BuiltImages) -> list[str]:  # noqa: F811
    """The chart's four images and the development backing services, in the node's runtime."""
    started = time.monotonic()
    backing = images_script.build_backing(images_script.ensure_base(images_script.BACKING_BASE))
    names = [*built.names.values()]
    names += [images_script.backing_image_name(service) for service in backing]
    if node.get("external"):
        loader = shlex.split(os.environ.get("OMS_E2E_LOAD_IMAGES", ""))
        commands = [[*loader, name] for name in names] if loader else []
    else:
        commands = [[sys.executable, str(CLUSTER_SCRIPT), "load", *names]]
    for command in commands:
        loaded = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
        assert loaded.returncode == 0, f"{command}: {loaded.stderr}"
    FIGURES.append(f"images built and loaded into the node in {time.monotonic() - started:.0f} s")
    return names


@pytest.fixture(scope="module")
def release(
    request: pytest.FixtureRequest, kube: Kube, node: dict[str, Any], node_images: list[str]
) -> Iterator[Release]:
    """The chart installed for this test module; a module may set `RELEASE_SETS` (--set) and
    `RELEASE_SET_JSON` (--set-json) for values of its own."""
    module = request.module
    installed = install(
        kube,
        node,
        prefix=module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-"),
        sets=getattr(module, "RELEASE_SETS", ()),
        set_json=getattr(module, "RELEASE_SET_JSON", ()),
    )
    timings = ", ".join(f"{step} {seconds:.0f} s" for step, seconds in installed.timings.items())
    FIGURES.append(
        f"{installed.namespace}: ready in {installed.installed_seconds:.0f} s ({timings})"
    )
    try:
        yield installed
    finally:
        if request.session.testsfailed:
            # What a person needs to see why: the pods and the recent events of the release.
            print(installed.kubectl("get", "pods", "-o", "wide", check=False))
            events = installed.kubectl("get", "events", "--sort-by=.lastTimestamp", check=False)
            print("\n".join(events.splitlines()[-40:]))
        remove(installed)


@pytest.fixture(scope="session")
def figures() -> list[str]:
    """The list the terminal summary prints. A test module's `from tests.e2e.node.conftest
    import FIGURES` is another list: pytest imports this file as the module `conftest` (the
    folder is no package), the import makes a second module of it."""
    return FIGURES
