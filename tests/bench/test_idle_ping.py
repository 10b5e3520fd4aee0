"""Pooled connections are pinged only after sitting idle (instead of on every checkout):
a dead idle connection is still replaced without anyone seeing an error, and a dead busy one
costs at most the request that meets it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from oms.db import session as db_session
from oms.settings import Settings
from tests import infra
from tests.conftest import SettingsFactory


@pytest.fixture
async def engine(make_settings: SettingsFactory) -> AsyncIterator[AsyncEngine]:
    settings: Settings = await make_settings(DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0)
    engine = db_session.create_engine(settings)
    yield engine
    await engine.dispose()


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def kill_backend(pid: int) -> None:
    admin = await infra._admin_connection()
    try:
        # The timeout makes it wait until the backend is gone, not just signalled.
        assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await admin.close()


async def test_a_dead_idle_connection_is_replaced_transparently(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await backend_pid(engine)
    await kill_backend(first)
    monkeypatch.setattr(db_session, "IDLE_PING_SECONDS", 0.0)  # every connection counts as idle
    second = await backend_pid(engine)
    assert second != first


async def test_a_recently_used_connection_is_not_pinged_and_one_request_pays(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await backend_pid(engine)
    await kill_backend(first)
    monkeypatch.setattr(db_session, "IDLE_PING_SECONDS", 3600.0)
    with pytest.raises(DBAPIError) as failure:
        await backend_pid(engine)
    assert failure.value.connection_invalidated
    assert await backend_pid(engine) not in (first, 0)
