"""Chart and image tests need the pinned helm, kubectl and helm-docs, which `make pytest`
installs."""

from __future__ import annotations

import shutil

import pytest

from tests.deploy.chart import HELM, HELM_DOCS, KUBECTL


@pytest.fixture(scope="session", autouse=True)
def _deploy_tools() -> None:
    missing = [tool for tool in (HELM, KUBECTL, HELM_DOCS) if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{missing} not installed: `make pytest T=tests/deploy` installs them")
