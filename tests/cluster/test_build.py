"""The node's pinned builds: deploy/node/kubernetes/go.mod replaces every staging module at
the matching release and follows the pinned kubectl's minor; the built binaries report theirs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.support import REPO, Kube

GO_MOD = REPO / "deploy" / "node" / "kubernetes" / "go.mod"


def kubernetes_version() -> str:
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", GO_MOD.read_text(), re.MULTILINE)
    assert match is not None
    return match.group(1)


def upstream_go_mod(version: str, cache_dir: str) -> Path:
    """k8s.io/kubernetes's own go.mod, from the build's module cache (fetched if it is gone)."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    env = {
        **os.environ,
        "GOMODCACHE": str(Path(cache_dir) / "go" / "mod"),
        "GOFLAGS": "-modcacherw",
    }
    downloaded = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
        env=env,
        cwd=GO_MOD.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return Path(json.loads(downloaded.stdout)["GoMod"])


def test_every_staging_module_is_replaced_by_its_release(own_node: dict[str, Any]) -> None:
    version = kubernetes_version()
    assert own_node["versions"]["kubernetes"].startswith(f"{version}-etcd-")
    staging = re.findall(
        r"^\s+(k8s\.io/\S+) v0\.0\.0$",
        upstream_go_mod(version, own_node["cache_dir"]).read_text(),
        re.MULTILINE,
    )
    assert len(staging) > 20
    release = "v0." + version.removeprefix("v1.")
    replaced = dict(
        re.findall(r"^\s+(k8s\.io/\S+) => \1 (v\S+)$", GO_MOD.read_text(), re.MULTILINE)
    )
    assert replaced == dict.fromkeys(staging, release)


def test_the_kubernetes_minor_is_the_pinned_kubectls() -> None:
    deploy_mk = (REPO / "mk" / "deploy.mk").read_text()
    match = re.search(r"^KUBECTL_EXPECTED_VERSION := v1\.(\d+)\.", deploy_mk, re.MULTILINE)
    assert match is not None
    assert kubernetes_version().split(".")[1] == match.group(1)


@pytest.mark.parametrize("component", ["kube-apiserver", "kubelet", "kube-proxy", "kube-scheduler"])
def test_the_built_binaries_report_their_version(own_node: dict[str, Any], component: str) -> None:
    binary = Path(own_node["binaries"][component])
    output = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == f"Kubernetes {kubernetes_version()}"


def test_the_node_reports_the_built_version(own_node: dict[str, Any]) -> None:
    kube = Kube(Path(own_node["kubeconfig"]))
    node = kube.json("get", "node", own_node["node"])
    assert node["status"]["nodeInfo"]["kubeletVersion"] == kubernetes_version()
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
