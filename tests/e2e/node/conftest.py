"""The end-to-end suite on the one-node cluster (marker `node`): the node of `make cluster`
(started for the session unless it runs), the images `make images` builds loaded into it, and
one release of the chart per test module (tests/e2e/node/support.py: `install`)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The session's cluster (tests/cluster) and image build (tests/images): one of each per session.
from tests.cluster.conftest import control_plane  # noqa: F401
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
def node(control_plane: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """The running node; the suite needs it Ready (a restarted API server, e.g. by tests/cluster,
    leaves it NotReady for a while)."""
    kube = Kube(Path(control_plane["kubeconfig"]))
    kube.run("wait", "--for=condition=Ready", f"node/{control_plane['node']}", "--timeout=180s")
    return control_plane


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
    loaded = subprocess.run(
        [sys.executable, str(CLUSTER_SCRIPT), "load", *names],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert loaded.returncode == 0, loaded.stderr
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
