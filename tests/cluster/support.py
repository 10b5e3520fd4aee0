"""kubectl and helm against the local cluster of scripts/cluster.py."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "scripts" / "cluster.py"
CHART = REPO / "charts" / "oms"
CRD_FILE = CHART / "crds" / "ordersystems.oms.dev.yaml"
HELM = os.environ.get("HELM_BIN") or str(REPO / ".tools" / "bin" / "helm")
KUBECTL = os.environ.get("KUBECTL_BIN") or str(REPO / ".tools" / "bin" / "kubectl")

T = TypeVar("T")

# These tests check the API server's side of the chart (admission, RBAC, the operator as a host
# process); their pods must not start on the node: images that are never pulled keep them waiting
# (ErrImageNeverPull), so no crash loops compete for the CPU and no second operator runs.
PODS_NEVER_RUN = ("--set", "image.registry=never-run.invalid", "--set", "image.pullPolicy=Never")


def cluster_script(*args: str) -> str:
    """Run scripts/cluster.py; its processes are detached, never children of pytest."""
    result = subprocess.run(
        [sys.executable, str(CLUSTER_SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, f"cluster.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def cluster_status() -> dict[str, Any]:
    status: dict[str, Any] = json.loads(cluster_script("status"))
    return status


def external_cluster() -> dict[str, Any] | None:
    """The cluster OMS_E2E_KUBECONFIG names (kind, k3s, a cloud one), described as
    `scripts/cluster.py status` describes ours; None when it is unset."""
    kubeconfig = os.environ.get("OMS_E2E_KUBECONFIG")
    if not kubeconfig:
        return None
    kube = Kube(Path(kubeconfig))
    first = kube.json("get", "nodes")["items"][0]
    addresses = {a["type"]: a["address"] for a in first["status"]["addresses"]}
    return {
        "external": True,
        "kubeconfig": kubeconfig,
        "node": first["metadata"]["name"],
        "node_ip": addresses.get("InternalIP"),
        "ingress_url": os.environ.get("OMS_E2E_INGRESS_URL", "http://127.0.0.1"),
        "ingress_class": os.environ.get("OMS_E2E_INGRESS_CLASS", ""),
    }


def wait_until(probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.25) -> T:
    """Poll until `probe` returns something truthy; fail with the last value on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class Kube:
    """kubectl/helm with one kubeconfig (the admin's, or a service account's token)."""

    kubeconfig: Path

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> Result:
        return self._run([KUBECTL, "--kubeconfig", str(self.kubeconfig), *args], stdin, check)

    def helm(self, *args: str, check: bool = True) -> Result:
        return self._run([HELM, "--kubeconfig", str(self.kubeconfig), *args], None, check)

    @staticmethod
    def _run(argv: Sequence[str], stdin: str | None, check: bool) -> Result:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, check=False, cwd=REPO
        )
        result = Result(done.returncode, done.stdout, done.stderr)
        if check:
            assert result.ok, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
        return result

    def json(self, *args: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.run(*args, "-o", "json").stdout)
        return document

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        scope = ["-n", namespace] if namespace else []
        result = self.run(
            "get", kind, name, *scope, "-o", "json", "--ignore-not-found", check=False
        )
        assert result.ok, result.stderr
        if not result.stdout.strip():
            return None
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def apply(self, documents: Any, *args: str, check: bool = True) -> Result:
        """Server-side apply of one document or a list of them."""
        docs = documents if isinstance(documents, list) else [documents]
        text = yaml.safe_dump_all(docs)
        return self.run("apply", "--server-side", "-f", "-", *args, stdin=text, check=check)

    def create_namespace(self, name: str) -> str:
        self.run("create", "namespace", name)
        return name

    def create_secret(self, namespace: str, name: str, values: dict[str, str]) -> None:
        literals = [f"--from-literal={key}={value}" for key, value in values.items()]
        self.run("-n", namespace, "create", "secret", "generic", name, *literals)

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        secret = self.get("secret", name, namespace)
        if secret is None:
            return None
        data = secret.get("data") or {}
        return {key: base64.b64decode(value) for key, value in data.items()}

    def replicas(self, namespace: str, deployment: str) -> int:
        scale = self.json("-n", namespace, "get", "deployment", deployment, "--subresource=scale")
        return int(scale["spec"].get("replicas") or 0)

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        listed = self.json(
            "-n", namespace, "get", "events", "--field-selector", f"involvedObject.name={name}"
        )
        items: list[dict[str, Any]] = listed.get("items") or []
        return items


def token_kubeconfig(admin: Path, token: str, target: Path, namespace: str) -> Path:
    """A kubeconfig for the same server that authenticates with a bearer token only."""
    config = yaml.safe_load(admin.read_text())
    cluster = config["clusters"][0]
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [
            {
                "name": "token",
                "context": {"cluster": cluster["name"], "user": "token", "namespace": namespace},
            }
        ],
        "current-context": "token",
    }
    target.write_text(yaml.safe_dump(document))
    target.chmod(0o600)
    return target


class OperatorProcess:
    """`oms-operator` as a process of its own, logging to a file."""

    def __init__(self, env: dict[str, str], logfile: Path) -> None:
        self.env = env
        self.logfile = logfile
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        executable = Path(sys.executable).parent / "oms-operator"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        environment.update(self.env)
        with self.logfile.open("ab") as log:
            self.process = subprocess.Popen(
                [str(executable)], env=environment, stdout=log, stderr=subprocess.STDOUT, cwd="/"
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def logs(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""


def api_key_set(folder: Path, data: dict[str, bytes]) -> tuple[Any, Any]:
    """The API's own key loader on the Secret's bytes, as the kubelet would mount them."""
    from oms.security.keys import load_key_set
    from oms.settings import Settings

    folder.mkdir(parents=True)
    for name, value in data.items():
        (folder / name).write_bytes(value)
    settings = Settings(
        _env_file=None,
        JWT_PRIVATE_KEY_PATH=folder / "private.pem",
        JWT_JWKS_PATH=folder / "jwks.json",
        JWT_AUTO_GENERATE_KEYS=False,
    )
    return settings, load_key_set(settings)
