"""The Dockerfile (one, multi-target): hadolint clean under our config, buildable by the classic
builder, each production target shaped as the chart expects (non-root, signals, ports, labels,
health check on the configured port, entry command = a console script of its member), and a
build context that holds what the Dockerfile copies. tests/images builds and runs the images."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.chart import REPO, run
from tests.deploy.dockerfile import instructions, parse

HADOLINT = str(Path(sys.executable).parent / "hadolint")
DOCKERFILE = REPO / "Dockerfile"
# target -> (member folder, exposed ports, the setting naming the port its health check probes)
TARGETS = {
    "api": ("services/api", {8000}, "PORT"),
    "consumer": ("services/consumer", {9101}, "CONSUMER_METRICS_PORT"),
    "worker": ("services/worker", {9102}, "WORKER_METRICS_PORT"),
    "operator": ("operator", {9103, 8080}, "OPERATOR_LIVENESS_PORT"),
}
OCI_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.source",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.licenses",
}


def member(target: str) -> dict[str, object]:
    project: dict[str, object] = tomllib.loads(
        (REPO / TARGETS[target][0] / "pyproject.toml").read_text()
    )["project"]
    return project


def workspace_members() -> list[str]:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    members: list[str] = root["tool"]["uv"]["workspace"]["members"]
    return members


def stage(name: str) -> list[tuple[str, str]]:
    image = parse(DOCKERFILE)
    found = [s for s in image.stages if s.name == name]
    assert len(found) == 1, name
    return found[0].instructions


DEV_DOCKERFILE = REPO / "deploy" / "dev" / "Dockerfile"
DEV_CONFIG = REPO / "deploy" / "dev" / ".hadolint.yaml"


def hadolint(
    *paths: Path, config: Path = REPO / ".hadolint.yaml"
) -> subprocess.CompletedProcess[str]:
    return run(HADOLINT, "--config", str(config), *map(str, paths))


def test_hadolint_passes() -> None:
    result = hadolint(DOCKERFILE)
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


def test_the_development_images_dockerfile_passes_its_own_hadolint_config(tmp_path: Path) -> None:
    """deploy/dev/Dockerfile: no label schema, no version pins; everything else still fails."""
    result = hadolint(DEV_DOCKERFILE, config=DEV_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install -y curl\nCMD python app.py\n")
    failed = hadolint(bad, config=DEV_CONFIG)
    assert failed.returncode == 1
    for rule in ("DL3006", "DL3015", "DL3025"):
        assert rule in failed.stdout


def test_one_dockerfile_for_every_service() -> None:
    found = {
        path.relative_to(REPO)
        for folder in ("services", "operator", "src")
        for path in (REPO / folder).rglob("Dockerfile*")
    }
    assert found == set()
    stages = {s.name for s in parse(DOCKERFILE).stages}
    for target in TARGETS:
        assert {target, f"{target}-dev", f"{target}-builder"} <= stages


def test_classic_builder_can_build_it() -> None:
    """Without buildx (Debian bookworm has none) only the classic builder runs: no BuildKit-only
    syntax, and no `# syntax=` line, which makes every build pull a frontend image."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    assert not any(keyword == "RUN" and "--mount" in rest for keyword, rest in instructions(text))
    assert not re.search(r"<<\s*-?\w+", text), "heredocs need BuildKit"
    assert parse(DOCKERFILE).stages[-1].name == "operator", "last stage is a production target"


@pytest.mark.parametrize("target", TARGETS)
def test_production_target(target: str) -> None:
    folder, ports, _ = TARGETS[target]
    image = parse(DOCKERFILE, target)
    assert image.user == "10001:10001"
    assert image.stop_signal == "SIGTERM"
    assert image.exposed == ports
    assert image.labels.keys() >= OCI_LABELS
    assert image.labels["org.opencontainers.image.title"] == member(target)["name"]
    assert image.labels["org.opencontainers.image.version"] == "${VERSION}"
    script = str(member(target)["name"])
    assert image.command == [script]
    scripts = member(target)["scripts"]
    assert isinstance(scripts, dict)
    assert script in scripts
    assert image.env["PATH"].startswith("/opt/venv/bin")
    # Only the venv of its own builder: no uv, no sources, no build tools.
    copies = [rest for s in image.chain for keyword, rest in s.instructions if keyword == "COPY"]
    assert copies == [f"--from={target}-builder /opt/venv /opt/venv"]
    assert not any(
        keyword == "RUN" and "apt-get" in rest
        for s in image.chain
        for keyword, rest in s.instructions
    )
    if target != "operator":
        # Their probe servers must be reachable from the kubelet.
        assert image.env["HOST"] == "0.0.0.0"
    assert folder in workspace_members()


@pytest.mark.parametrize("target", TARGETS)
def test_health_check_probes_the_configured_port(target: str) -> None:
    """Regression: the API's HEALTHCHECK probed 127.0.0.1:8000 whatever PORT said."""
    _, ports, setting = TARGETS[target]
    image = parse(DOCKERFILE, target)
    assert image.healthcheck is not None
    assert f"os.environ.get('{setting}', '" in image.healthcheck
    assert not re.search(r"127\.0\.0\.1:\d", image.healthcheck)
    default = re.search(rf"os.environ.get\('{setting}', '(\d+)'\)", image.healthcheck)
    assert default is not None
    assert int(default.group(1)) in ports


@pytest.mark.parametrize("target", TARGETS)
def test_dev_target_is_the_production_image_restarting_on_change(target: str) -> None:
    dev = parse(DOCKERFILE, f"{target}-dev")
    package = str(TARGETS[target][0]).rsplit("/", 1)[-1]
    assert dev.user == "10001:10001"
    assert dev.command[:3] == ["watchfiles", "--filter", "python"]
    assert dev.command[3] == member(target)["name"]
    # Owned by the app user: Tilt's live update syncs into the venv.
    copies = [rest for keyword, rest in dev.chain[-1].instructions if keyword == "COPY"]
    assert copies == [f"--from={target}-builder --chown=10001:10001 /opt/venv /opt/venv"]
    assert any(path.endswith(f"site-packages/oms_{package}") for path in dev.command)


@pytest.mark.parametrize("target", TARGETS)
def test_builder_installs_only_its_member_from_the_lock_file(target: str) -> None:
    runs = [rest for keyword, rest in stage(f"{target}-builder") if keyword == "RUN"]
    assert len(runs) == 2
    assert all("uv sync --frozen --no-dev" in run for run in runs)
    assert all(f"--package {member(target)['name']}" in run for run in runs)
    assert "--no-install-workspace" in runs[0]
    assert "--no-editable" in runs[1]
    # Dependencies first (cached until the lock changes), then only this member's sources.
    copies = [rest for keyword, rest in stage(f"{target}-builder") if keyword == "COPY"]
    package = f"{TARGETS[target][0]}/oms_{TARGETS[target][0].rsplit('/', 1)[-1]}"
    assert copies == ["src/oms src/oms", f"{package} {package}"]


def test_builder_never_installs_a_cached_wheel() -> None:
    """Regression: uv's cache is keyed on pyproject.toml, so a wheel cached by an earlier build
    came back after a change under services/ (stale code in the image). No cache at all in the
    builder, and no cache mount to carry one between builds."""
    env = parse(DOCKERFILE, "builder-base").env
    assert env["UV_NO_CACHE"] == "1"
    assert env["UV_COMPILE_BYTECODE"] == "1"


def test_builder_base_has_every_workspace_member_manifest() -> None:
    """uv needs every member's pyproject.toml to read the workspace; a member added to the
    workspace but not copied would fail only at `docker build`."""
    copies = " ".join(rest for keyword, rest in stage("builder-base") if keyword == "COPY")
    for folder in workspace_members():
        assert f"{folder}/pyproject.toml {folder}/" in copies


def test_extra_ca_is_off_by_default_and_stays_in_the_builder() -> None:
    text = DOCKERFILE.read_text()
    assert 'ARG EXTRA_CA_CERTS=""' in text
    for target in TARGETS:
        chain = parse(DOCKERFILE, target).chain
        assert not any("EXTRA_CA_CERTS" in rest for s in chain for _, rest in s.instructions)


def dockerignore_includes() -> list[str]:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    return [line[1:] for line in lines if line.startswith("!")]


def test_dockerignore_reincludes_plain_paths() -> None:
    """Regression: Engine 20.10 re-included nothing for `!services/*/oms_*/`, and the images died
    on `No module named 'oms_api'`. Plain paths only."""
    for path in dockerignore_includes():
        assert not set(path) & set("*?[]"), path
        assert not path.endswith("/"), path
        assert (REPO / path).exists(), path


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_else() -> None:
    included = dockerignore_includes()
    sources = [
        source
        for keyword, rest in instructions(DOCKERFILE.read_text())
        if keyword == "COPY" and "--from=" not in rest
        for source in rest.split()[:-1]
    ]
    for source in sources:
        assert any(
            source == path or source.startswith(f"{path}/") or fnmatch.fnmatch(source, path)
            for path in included
        ), f"COPY {source}: left out of the build context by .dockerignore"
    for path in included:
        assert any(source == path or source.startswith(f"{path}/") for source in sources), (
            f".dockerignore sends {path}, which no COPY uses"
        )
    assert not any(path.startswith((".venv", "tests", ".tools", "data")) for path in included)
