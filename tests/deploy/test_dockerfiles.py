"""The Dockerfiles: hadolint clean under our config, and the production stage shaped as the
issue asks (non-root, signals, ports, labels, entry command = a console script of the project)."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.chart import REPO
from tests.deploy.dockerfile import instructions, parse

HADOLINT = str(Path(sys.executable).parent / "hadolint")
DOCKERFILES = {
    "api": (REPO / "services/api/Dockerfile", {8000}, "oms-api"),
    "consumer": (REPO / "services/consumer/Dockerfile", {9101}, "oms-consumer"),
    "worker": (REPO / "services/worker/Dockerfile", {9102}, "oms-worker"),
    "operator": (REPO / "operator/Dockerfile", {9103, 8080}, "oms-operator"),
}
OCI_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.source",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.licenses",
}


def hadolint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HADOLINT, "--config", str(REPO / ".hadolint.yaml"), *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


@pytest.mark.parametrize("service", DOCKERFILES)
def test_hadolint_passes(service: str) -> None:
    result = hadolint(DOCKERFILES[service][0])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_config_does_not_mute_warnings(tmp_path: Path) -> None:
    """hadolint exits 0 on a config it cannot parse; prove ours is read and still fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install -y curl\nCMD python app.py\n")
    result = hadolint(bad)
    assert result.returncode == 1
    for rule in ("DL3006", "DL3008", "DL3025", "DL3049"):
        assert rule in result.stdout


def test_every_service_has_a_dockerfile() -> None:
    found = {*REPO.glob("services/*/Dockerfile"), REPO / "operator" / "Dockerfile"}
    assert found == {path for path, _, _ in DOCKERFILES.values()}


@pytest.mark.parametrize("service", DOCKERFILES)
def test_production_stage(service: str) -> None:
    path, ports, script = DOCKERFILES[service]
    image = parse(path)
    assert image.chain[-1].name == "runtime", "the default target must be the production stage"
    assert image.user == "10001:10001"
    assert image.stop_signal == "SIGTERM"
    assert image.exposed == ports
    assert image.labels.keys() >= OCI_LABELS
    assert image.command == [script]
    # The entry command is a console script of the member the Dockerfile sits beside.
    member = tomllib.loads((path.parent / "pyproject.toml").read_text())["project"]
    assert script in member["scripts"]
    assert image.env["PATH"].startswith("/opt/venv/bin")
    # Only the venv comes from the builder: no uv, no sources, no build tools.
    copies = [
        rest for stage in image.chain for keyword, rest in stage.instructions if keyword == "COPY"
    ]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert not any(
        keyword == "RUN" and "apt-get" in rest
        for stage in image.chain
        for keyword, rest in stage.instructions
    )
    if service != "operator":
        # Their probe servers must be reachable from the kubelet.
        assert image.env["HOST"] == "0.0.0.0"


@pytest.mark.parametrize("service", DOCKERFILES)
def test_builder_installs_from_the_lock_file(service: str) -> None:
    runs = [
        rest
        for keyword, rest in instructions(DOCKERFILES[service][0].read_text())
        if keyword == "RUN" and "uv " in rest
    ]
    assert len(runs) == 2
    assert all("--frozen" in run and "--no-dev" in run for run in runs)
    # Only this member (and the library it depends on), never the whole workspace.
    member = tomllib.loads((DOCKERFILES[service][0].parent / "pyproject.toml").read_text())
    assert all(f"--package {member['project']['name']}" in run for run in runs)
    assert "--no-install-workspace" in runs[0]
    assert "--no-editable" in runs[1]


@pytest.mark.parametrize("service", DOCKERFILES)
def test_builder_mounts_every_workspace_member_for_the_dependency_layer(service: str) -> None:
    """uv needs every member's pyproject.toml to read the workspace; a member added to the
    workspace but not mounted would fail only at `docker build`."""
    workspace = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    text = DOCKERFILES[service][0].read_text()
    for member in workspace["members"]:
        assert f"source={member}/pyproject.toml,target={member}/pyproject.toml" in text


def test_dockerignore_sends_only_what_the_builder_copies() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "uv.lock", "README.md", "src/oms"} <= included
    # Every member's pyproject.toml (uv reads them all) and package, nothing else of its folder.
    workspace = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    for member in workspace["members"]:
        assert any(fnmatch.fnmatch(f"{member}/pyproject.toml", name) for name in included), member
    assert not any(name.startswith((".venv", "tests", ".tools", "data")) for name in included)
