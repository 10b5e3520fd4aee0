"""Liveness and readiness."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import SettingsFactory, serving


async def test_ready_when_database_and_cache_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}


async def test_not_ready_names_the_failing_dependency(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = await make_settings()
    if settings.REDIS_URL:
        broken = settings.model_copy(update={"REDIS_URL": "redis://127.0.0.1:1/0"})
        failing = "cache"
    else:
        broken = settings.model_copy(
            update={"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}"}  # a directory
        )
        failing = "database"
    async with serving(broken) as client:
        live = await client.get("/health")
        ready = await client.get("/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["checks"][failing].startswith("error")
