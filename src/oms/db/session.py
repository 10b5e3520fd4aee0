"""Engine and session factory from DatabaseSettings; one pool per process, reused everywhere."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from oms.settings import DatabaseSettings


def _enable_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    url = settings.database_url
    if settings.database_backend == "sqlite":
        if url.database:
            from pathlib import Path

            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=settings.DB_ECHO)
        event.listen(engine.sync_engine, "connect", _enable_sqlite_pragmas)
        return engine
    engine = create_async_engine(
        url,
        echo=settings.DB_ECHO,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_MAX_OVERFLOW,
    )
    _ping_idle_connections(engine)
    return engine


# A pooled connection unused for this long is pinged before it is handed out.
IDLE_PING_SECONDS = 5.0


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Pessimistic disconnect handling for idle connections only.

    `pool_pre_ping` costs a round trip on every checkout, a fifth of the database work of
    creating an order. Connections that sat idle (where a database restart or a proxy's idle
    timeout leaves dead ones) are still pinged and replaced transparently; a connection used
    moments ago is not. Should one of those be dead anyway, its error makes SQLAlchemy
    invalidate the whole pool, so at most the requests in flight at that moment fail.
    """
    sync_engine = engine.sync_engine

    def mark_idle_since(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The pool drops this connection and checks out another (or opens a new one).
            raise DisconnectionError(f"idle connection failed its ping: {error!r}") from error

    event.listen(sync_engine, "connect", mark_idle_since)
    event.listen(sync_engine, "checkin", mark_idle_since)
    event.listen(sync_engine, "checkout", ping_if_idle)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A transaction: commit on success, roll back on any error."""
    async with factory() as session, session.begin():
        yield session
