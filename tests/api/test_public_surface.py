"""What the API port serves besides the API: /metrics unless API_METRICS_PORT moves it, the
OpenAPI documentation unless API_DOCS_ENABLED is off; each setting leaves the other alone."""

from __future__ import annotations

import pytest

from tests.api.test_hostile_input import assert_problem
from tests.conftest import ServeFactory

DOCS = ("/docs", "/redoc", "/openapi.json")


@pytest.mark.parametrize(
    ("overrides", "served", "hidden"),
    [
        ({}, (*DOCS, "/metrics"), ()),
        ({"API_DOCS_ENABLED": False}, ("/metrics",), DOCS),
        ({"API_METRICS_PORT": 9999}, DOCS, ("/metrics",)),
    ],
    ids=["defaults", "docs-off", "metrics-elsewhere"],
)
async def test_each_setting_removes_only_its_own_paths(
    serve: ServeFactory,
    overrides: dict[str, object],
    served: tuple[str, ...],
    hidden: tuple[str, ...],
) -> None:
    async with serve(**overrides) as client:
        for path in served:
            assert (await client.get(path)).status_code == 200, path
        for path in hidden:
            assert_problem(await client.get(path), 404, "not-found")
