"""deploy/controlplane/go.mod is consistent: every staging module replaced at the matching release,
and the Kubernetes minor the pinned kubectl speaks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.cluster.support import REPO

GO_MOD = REPO / "deploy" / "controlplane" / "go.mod"


def kubernetes_version() -> str:
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", GO_MOD.read_text(), re.MULTILINE)
    assert match is not None
    return match.group(1)


def upstream_go_mod(version: str) -> Path:
    """k8s.io/kubernetes's own go.mod, from the build's module cache (fetched if it is gone)."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    env = {
        **os.environ,
        "GOMODCACHE": str(REPO / ".tools" / "go" / "mod"),
        "GOFLAGS": "-modcacherw",
    }
    downloaded = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
        env=env,
        cwd=REPO / "deploy" / "controlplane",
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return Path(json.loads(downloaded.stdout)["GoMod"])


def test_every_staging_module_is_replaced_by_its_release(control_plane: dict[str, Any]) -> None:
    version = kubernetes_version()
    assert control_plane["versions"]["kubernetes"] == version
    staging = re.findall(
        r"^\s+(k8s\.io/\S+) v0\.0\.0$", upstream_go_mod(version).read_text(), re.MULTILINE
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


def test_the_built_server_reports_its_version(control_plane: dict[str, Any]) -> None:
    binary = Path(control_plane["bin_dir"]) / "kube-apiserver"
    assert binary.is_file()
    output = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == f"Kubernetes {kubernetes_version()}"
