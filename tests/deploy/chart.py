"""Render charts/oms with the real helm, and its README with helm-docs (both installed by
`make pytest`), for the chart tests."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "oms"
CI_VALUES = CHART / "ci"
SCRIPTS = REPO / "scripts"
HELM = os.environ.get("HELM_BIN") or str(REPO / ".tools" / "bin" / "helm")
KUBECTL = os.environ.get("KUBECTL_BIN") or str(REPO / ".tools" / "bin" / "kubectl")


def _built_helm_docs() -> str:
    """Where mk/deploy.mk builds its pinned helm-docs: ~/.cache/oms (OMS_CACHE_DIR, as
    scripts/localcluster/layout.py), by version. `make pytest` passes the path as HELM_DOCS_BIN."""
    version = re.search(
        r"^HELM_DOCS_VERSION := (\S+)$", (REPO / "mk" / "deploy.mk").read_text(), re.M
    )
    assert version is not None, "mk/deploy.mk pins no HELM_DOCS_VERSION"
    cache = os.environ.get("OMS_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "oms"
    )
    return str(Path(cache, "helm-docs", version[1], "helm-docs"))


HELM_DOCS = os.environ.get("HELM_DOCS_BIN") or _built_helm_docs()

Document = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "Job", "Pod")


class RenderError(RuntimeError):
    pass


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a tool from the repository's root; the caller judges its exit status."""
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, cwd=REPO)


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/<name> with this interpreter (the scripts run by `make manifests`)."""
    return run(sys.executable, str(SCRIPTS / name), *args)


def helm_docs(chart_root: Path, *, dry_run: bool) -> str:
    """helm-docs on the charts under chart_root, with the flags `make manifests` passes: writes
    each README.md, or with dry_run returns what it would write."""
    argv = [HELM_DOCS, "--chart-search-root", str(chart_root), "--sort-values-order", "file"]
    argv += ["--log-level", "warning", *(["--dry-run"] if dry_run else [])]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
    if result.returncode != 0:
        raise RenderError(result.stderr)
    return result.stdout


def undocumented(readme: str) -> list[str]:
    """Keys of the README's values table whose description is empty: helm-docs lists a value
    without a `# --` comment all the same, with nothing to say about it."""
    rows = (line.split(" | ") for line in readme.splitlines() if line.startswith("| "))
    return [cells[0].removeprefix("| ") for cells in rows if cells[-1].strip() == "|"]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return run(HELM, *args)


@functools.cache
def _render(values: tuple[str, ...], sets: tuple[str, ...]) -> str:
    argv = ["template", "oms", str(CHART), "--namespace", "oms"]
    for path in values:
        argv += ["--values", path]
    for assignment in sets:
        argv += ["--set", assignment]
    result = helm(*argv)
    if result.returncode != 0:
        raise RenderError(result.stderr)
    return result.stdout


def render(values: list[Path] | None = None, sets: list[str] | None = None) -> list[Document]:
    text = _render(tuple(str(p) for p in values or []), tuple(sets or []))
    return [doc for doc in yaml.safe_load_all(text) if doc]


def scenario_files() -> list[Path]:
    return sorted(CI_VALUES.glob("*-values.yaml"))


def find(docs: list[Document], kind: str, name: str | None = None) -> list[Document]:
    return [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def one(docs: list[Document], kind: str, name: str) -> Document:
    matches = find(docs, kind, name)
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(doc: Document) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    return spec


def containers(doc: Document) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads(docs: list[Document]) -> list[Document]:
    return [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS]


def env_names(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container.get("env", [])}
