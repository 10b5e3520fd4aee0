"""Checks of the performance pass run on PostgreSQL only: it is what the changes target."""

from __future__ import annotations

import pytest


@pytest.fixture
def backend() -> str:
    return "postgres"
