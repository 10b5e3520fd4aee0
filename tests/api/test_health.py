"""Liveness and readiness."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import SettingsFactory, serving


async def test_ready_when_database_and_cache_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}


async def test_not_ready_when_the_database_does_not_answer(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = await make_settings()
    if settings.REDIS_URL:  # PostgreSQL: a port nothing listens on
        unreachable = "postgresql+asyncpg://oms@127.0.0.1:1/order_db"
    else:
        unreachable = f"sqlite+aiosqlite:///{tmp_path}"  # a directory
    async with serving(settings.model_copy(update={"DATABASE_URL": unreachable})) as client:
        live = await client.get("/health")
        ready = await client.get("/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert ready.json()["checks"]["database"].startswith("error")
