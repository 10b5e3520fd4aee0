"""Chart and image tests need the pinned helm and kubectl, which `make pytest` installs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.chart import HELM, KUBECTL


@pytest.fixture(scope="session", autouse=True)
def _deploy_tools() -> None:
    missing = [tool for tool in (HELM, KUBECTL) if not Path(tool).is_file()]
    if missing:
        pytest.fail(f"{missing} not installed: `make pytest T=tests/deploy` installs them")
