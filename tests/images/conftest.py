"""One build of the four images per test session, exactly as `make images` builds them (same
script, names, base and CA handling): cheap when the layer cache is warm, and on a machine without
a running engine or a reachable registry it starts the engine and makes the base first."""

from __future__ import annotations

import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

# The control plane of tests/cluster (for the operator): started for the session unless it runs.
from tests.cluster.conftest import control_plane  # noqa: F401
from tests.images.support import REPO, SERVICES, docker, images_script

HERE = Path(__file__).resolve().parent
# The chart's defaults (charts/oms/values.yaml image.registry, tag = appVersion); make images too.
REGISTRY = "ghcr.io/oms-project"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.images)
            # The first test waits for the session's build: ~5 minutes from nothing on 2 cores.
            item.add_marker(pytest.mark.timeout(1200))


@dataclass(frozen=True)
class BuiltImages:
    names: dict[str, str]
    base: str
    ca_file: Path | None
    # No layer of ours existed before this session's build: it was a build from a clean cache.
    cold: bool
    seconds: dict[str, float]


def project_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def _our_layers() -> int:
    """Images in the engine besides the bases (intermediate build layers included)."""
    bases = {images_script.LOCAL_BASE, images_script.DEFAULT_BASE}
    lines = docker("images", "--all", "--format", "{{.Repository}}:{{.Tag}}").splitlines()
    return sum(1 for line in lines if line not in bases)


@pytest.fixture(scope="session")
def built() -> BuiltImages:
    started = time.monotonic()
    images_script.ensure_engine()
    base = images_script.ensure_base(images_script.DEFAULT_BASE)
    # As mk/images.mk: the host's CA bundle, if it names one (only what the base lacks is used).
    ca_file = Path(os.environ["SSL_CERT_FILE"]) if os.environ.get("SSL_CERT_FILE") else None
    cold = _our_layers() == 0
    seconds = images_script.build(
        services=SERVICES, registry=REGISTRY, tag=project_version(), base=base, ca_file=ca_file
    )
    names = {
        service: images_script.image_name(REGISTRY, service, project_version())
        for service in SERVICES
    }
    print(f"\nimages: built in {time.monotonic() - started:.0f}s {seconds} (cold: {cold})")
    return BuiltImages(names=names, base=base, ca_file=ca_file, cold=cold, seconds=seconds)
