"""Tilt with the project's Tiltfile on the node: `tilt ci` builds the four dev images, pushes them
to the node's registry (the cluster's `local-registry-hosting` ConfigMap says where) and brings the
backing services and the chart up, every resource ready; with `tilt up` running, an edit of the
API's sources reaches the running pod by live update (same pod, same image, no other image
rebuilt) and a change of a dependency file rebuilds the image instead; `tilt down` leaves nothing
of Tilt's running and keeps the cluster-wide CRD.

Each test has a namespace of its own (a kubeconfig whose context names it: the Tiltfile deploys
into the current namespace), its own Tilt server port and forwarded ports (`--port-offset`), and
a snapshot of the repository's build inputs in tmp_path, which the inner-loop test edits (never
the checkout). Tilt is `make tilt`'s launcher (TILT_BIN), as developers run it."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.cluster.support import REPO, Kube, wait_until
from tests.e2e.node.support import create_namespace
from tests.harness import free_port

# Last in the run: Tilt is compiled during it (tests/ordering.py).
pytestmark = pytest.mark.tilt

TILT = Path(os.environ.get("TILT_BIN") or REPO / ".tools" / "bin" / "tilt")
# What the Tiltfile reads and Tilt builds from; the snapshot holds these and nothing else.
WORKSPACE_ENTRIES = (
    "Tiltfile",
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "uv.lock",
    "src",
    "services",
    "operator",
    "charts",
    "deploy",
    "scripts",
    "observability",
    "Makefile",
    "mk",
)
# The local ports the Tiltfile forwards to, before --port-offset.
FORWARDED_PORTS = (5432, 6379, 15672, 8000, 9100, 9101, 9102, 9103)
# The Tiltfile's resources that must be ready (chart-files runs only on an observability/ edit).
RESOURCES = (
    "postgresql",
    "redis",
    "rabbitmq",
    "oms-migrations",
    "oms-api",
    "oms-consumer",
    "oms-worker",
    "oms-operator",
)
IMAGES = ("api", "consumer", "worker", "operator")
CRD = "ordersystems.oms.dev"
HEALTH_SOURCE = Path("services/api/oms_api/routers/health.py")
HEALTH_ANSWER = 'return {"status": "ok"}'
START_TIMEOUT = 900.0


def snapshot(target: Path) -> Path:
    """A copy of the checkout's build inputs as they are now (uncommitted edits included)."""
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache")
    target.mkdir(parents=True)
    for entry in WORKSPACE_ENTRIES:
        source = REPO / entry
        if source.is_dir():
            shutil.copytree(source, target / entry, ignore=junk)
        else:
            shutil.copy2(source, target / entry)
    return target


def namespaced_kubeconfig(admin: Path, namespace: str, target: Path) -> Path:
    """The admin kubeconfig with `namespace` as its current context's namespace."""
    config = yaml.safe_load(admin.read_text())
    for context in config["contexts"]:
        if context["name"] == config["current-context"]:
            context["context"]["namespace"] = namespace
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o600)
    return target


def port_offset() -> int:
    """An offset that puts every forwarded port on a free one (they are all above 1024)."""
    for _ in range(50):
        offset = random.randrange(20000, 40000, 100)
        if all(_free(port + offset) for port in FORWARDED_PORTS):
            return offset
    raise AssertionError("no free range of ports for Tilt's port forwards")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Pod:
    name: str
    image: str
    restarts: int


@dataclass
class TiltSession:
    """One Tilt server (ci or up) on the snapshot, in one namespace."""

    kube: Kube
    namespace: str
    workspace: Path
    kubeconfig: Path
    logfile: Path
    port: int = field(default_factory=free_port)
    offset: int = field(default_factory=port_offset)
    process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        # The pinned helm and kubectl first, as `eval "$(make -s env)"` does.
        path = f"{REPO / '.tools' / 'bin'}:{os.environ['PATH']}"
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}

    def tiltfile_args(self) -> list[str]:
        return ["--", f"--port-offset={self.offset}"]

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        with self.logfile.open("a") as log:
            log.write(f"\n$ tilt {' '.join(args)}\n")
            log.flush()
            return subprocess.run(
                [str(TILT), *args],
                cwd=self.workspace,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )

    def ci(self) -> subprocess.CompletedProcess[str]:
        return self.run(
            "ci", f"--port={self.port}", "--timeout=15m", *self.tiltfile_args(), timeout=1000
        )

    def start_up(self) -> None:
        log = self.logfile.open("a")
        self.process = subprocess.Popen(
            [str(TILT), "up", "--stream", f"--port={self.port}", *self.tiltfile_args()],
            cwd=self.workspace,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def resources(self) -> set[str]:
        """The resources `tilt up` knows so far: none until its API server answers and it has
        loaded the Tiltfile (`tilt wait` fails on a resource that does not exist yet)."""
        result = subprocess.run(  # the CLI finds the server by its port
            [str(TILT), "get", "uiresources", f"--port={self.port}", "-o", "name"],
            env=self.environment(),
            capture_output=True,
            text=True,
            check=False,
        )
        return {line.rpartition("/")[2] for line in result.stdout.split()}

    def wait_ready(self, timeout: float) -> None:
        wait_until(lambda: set(RESOURCES) <= self.resources(), timeout=120, interval=0.5)
        result = self.run(
            "wait",
            f"--port={self.port}",
            "--for=condition=Ready",
            f"--timeout={timeout:.0f}s",
            *(f"uiresource/{name}" for name in RESOURCES),
            timeout=timeout + 30,
        )
        assert result.returncode == 0, self.log_tail()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.run("down", *self.tiltfile_args(), timeout=300)

    def log_tail(self, characters: int = 6000) -> str:
        return self.logfile.read_text(errors="replace")[-characters:]

    # --- the cluster's side ------------------------------------------------------------------

    def pods(self, component: str) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/component={component}"
        listed = self.kube.json("-n", self.namespace, "get", "pods", "-l", selector)["items"]
        return [pod for pod in listed if not pod["metadata"].get("deletionTimestamp")]

    def running_pod(self, component: str) -> Pod | None:
        """The component's one pod, if it runs with every container ready."""
        pods = self.pods(component)
        if len(pods) != 1:
            return None
        (pod,) = pods
        statuses = pod["status"].get("containerStatuses") or []
        if pod["status"].get("phase") != "Running" or not all(s.get("ready") for s in statuses):
            return None
        return Pod(
            pod["metadata"]["name"],
            pod["spec"]["containers"][0]["image"],
            sum(status["restartCount"] for status in statuses),
        )

    def url(self, port: int, path: str) -> str:
        return f"http://127.0.0.1:{port + self.offset}{path}"

    def tilt_objects(self) -> list[str]:
        """What Tilt applied, or what that made, still in the namespace (Tilt labels all it
        applies and the pod templates in it)."""
        kinds = "all,configmaps,secrets,serviceaccounts,roles,rolebindings,ordersystems"
        listed = self.kube.run(
            "-n", self.namespace, "get", kinds, "-l", "app.kubernetes.io/managed-by=tilt",
            "-o", "name",
        )  # fmt: skip
        return listed.stdout.split()


def registry_host(kube: Kube) -> str | None:
    """Where the cluster says images go (KEP-1755), if it has a registry."""
    hosting = kube.get("configmap", "local-registry-hosting", "kube-public")
    if hosting is None:
        return None
    host = yaml.safe_load(hosting["data"]["localRegistryHosting.v1"])["host"]
    return str(host)


@pytest.fixture(scope="module")
def tilt_binary() -> Path:
    if not os.access(TILT, os.X_OK):
        pytest.fail(f"{TILT} missing: `make tilt` builds it (`make pytest T=tests/e2e/node` too)")
    return TILT


@pytest.fixture
def tilt(
    tilt_binary: Path,
    kube: Kube,
    node: dict[str, Any],
    node_images: list[str],
    tmp_path: Path,
) -> Iterator[TiltSession]:
    namespace = create_namespace(kube, "tilt")
    session = TiltSession(
        kube=kube,
        namespace=namespace,
        workspace=snapshot(tmp_path / "repo"),
        kubeconfig=namespaced_kubeconfig(
            Path(node["kubeconfig"]), namespace, tmp_path / "kubeconfig"
        ),
        logfile=tmp_path / "tilt.log",
    )
    try:
        yield session
    finally:
        session.stop()
        session.down()
        print(f"tilt log: {session.logfile}")
        kube.run("delete", "namespace", namespace, "--wait=false", check=False)


def assert_down_leaves_nothing(tilt: TiltSession) -> float:
    """`tilt down`: nothing Tilt applied left, no pod running, the CRD still there. Returns
    the seconds until the last pod was gone."""
    started = time.monotonic()
    result = tilt.down()
    assert result.returncode == 0, tilt.log_tail()
    # Pods and ReplicaSets go with their owners, a moment (a grace period) later.
    wait_until(lambda: tilt.tilt_objects() == [], timeout=180, interval=1)
    pods = tilt.kube.run("-n", tilt.namespace, "get", "pods", "-o", "name").stdout.split()
    assert pods == []
    # Shared by every release on the cluster: the Tiltfile marks it to be kept.
    assert tilt.kube.get("crd", CRD) is not None
    cluster_roles = tilt.kube.run("get", "clusterroles,clusterrolebindings", "-o", "name").stdout
    assert f"{tilt.namespace}-oms" not in cluster_roles
    return time.monotonic() - started


def test_tilt_ci_builds_the_dev_images_and_brings_everything_up(
    tilt: TiltSession, kube: Kube, node: dict[str, Any], figures: list[str]
) -> None:
    started = time.monotonic()
    result = tilt.ci()
    seconds = time.monotonic() - started
    assert result.returncode == 0, tilt.log_tail()

    registry = registry_host(kube)
    if not node.get("external"):
        assert registry == "localhost:5000", "the node announces its registry"
    for component in IMAGES:
        pod = tilt.running_pod(component)
        assert pod is not None, (component, tilt.pods(component))
        # What Tilt built from the <service>-dev target, under the tag Tilt gave it.
        repository, _, tag = pod.image.rpartition(":")
        assert repository == (f"{registry}/" if registry else "") + f"oms-{component}"
        assert tag.startswith("tilt-"), pod.image
        assert pod.restarts == 0, (component, pod)
    if registry is not None and not node.get("external"):
        # The node pulled them from its own registry, which has the four.
        catalog = httpx.get(f"http://{registry}/v2/_catalog", timeout=10).json()
        assert {f"oms-{component}" for component in IMAGES} <= set(catalog["repositories"])
    kube.run(
        "-n", tilt.namespace, "wait", "--for=condition=Available", "deployment", "--all",
        "--timeout=60s",
    )  # fmt: skip
    job = kube.get("job", "oms-migrations", tilt.namespace)
    assert job is not None
    assert job["status"].get("succeeded") == 1, job["status"]
    ordersystem = kube.get("ordersystem", "oms", tilt.namespace)
    assert ordersystem is not None

    down_seconds = assert_down_leaves_nothing(tilt)
    figures.append(
        f"tilt ci: four dev images built and pushed, backing services and chart ready, exit 0 in "
        f"{seconds:.0f} s; tilt down and every pod gone in {down_seconds:.0f} s"
    )


def test_live_update_reaches_the_api_pod_and_a_dependency_change_rebuilds(
    tilt: TiltSession, figures: list[str]
) -> None:
    started = time.monotonic()
    tilt.start_up()
    tilt.wait_ready(START_TIMEOUT)
    start_seconds = time.monotonic() - started
    before = {component: tilt.running_pod(component) for component in IMAGES}
    assert all(before.values()), before
    health = tilt.url(8000, "/health")

    def answer() -> dict[str, Any] | None:
        try:
            response = httpx.get(health, timeout=2)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    # Through Tilt's port forward, on the offset port.
    assert wait_until(answer, timeout=60) == {"status": "ok"}

    # An edit of the API's own sources: synced into the running container, where watchfiles
    # restarts the process; no image is built.
    source = tilt.workspace / HEALTH_SOURCE
    text = source.read_text()
    assert HEALTH_ANSWER in text
    token = uuid.uuid4().hex
    edited = time.monotonic()
    source.write_text(text.replace(HEALTH_ANSWER, f'return {{"status": "ok", "edit": "{token}"}}'))

    def edited_answer() -> bool:
        found = answer()
        return found is not None and found.get("edit") == token

    wait_until(edited_answer, timeout=120, interval=0.1)
    live_update_seconds = time.monotonic() - edited
    after = {component: tilt.running_pod(component) for component in IMAGES}
    # Same pods, same images, no container restarted: the file went into the running API
    # container, and no other image counted the edit as a change of its own.
    assert after == before, (before, after)

    # A dependency file: live update cannot apply it; the image is rebuilt and redeployed.
    pyproject = tilt.workspace / "services" / "api" / "pyproject.toml"
    changed = time.monotonic()
    pyproject.write_text(pyproject.read_text() + "\n# changed by tests/e2e/node/test_tilt.py\n")
    old_api = before["api"]
    assert old_api is not None

    def rebuilt_api() -> Pod | None:
        pod = tilt.running_pod("api")
        return pod if pod is not None and pod.image != old_api.image else None

    new_api = wait_until(rebuilt_api, timeout=START_TIMEOUT, interval=1)
    rebuild_seconds = time.monotonic() - changed
    assert new_api.name != old_api.name
    assert new_api.image.rpartition(":")[0] == old_api.image.rpartition(":")[0]
    # The rebuilt image has the edit too (it was built from the edited sources).
    assert wait_until(answer, timeout=60).get("edit") == token

    tilt.stop()
    assert_down_leaves_nothing(tilt)
    figures.append(
        f"tilt up: every resource ready in {start_seconds:.0f} s; an API edit served by the "
        f"same pod {live_update_seconds:.1f} s after the write (live update); a pyproject.toml "
        f"change served by a rebuilt image in a new pod after {rebuild_seconds:.0f} s"
    )
