"""Per-process resources of a worker child: one event loop, one engine, one cache client.

Celery tasks are synchronous; the processing code is async. Each prefork child keeps one loop
and one small connection pool for its whole life (opened on `worker_process_init`) instead of
building an engine per task. The pid check makes a forked copy open its own resources rather
than reuse its parent's sockets.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from oms.cache import OrderCache
from oms.db.session import create_engine, create_session_factory
from oms.observability.tracing import tracing_active
from oms.resources import build_order_cache
from oms.settings import WorkerSettings

T = TypeVar("T")


@dataclass
class WorkerRuntime:
    pid: int
    loop: asyncio.AbstractEventLoop
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    cache: OrderCache

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        try:
            self.run(self.cache.close())
            self.run(self.engine.dispose())
        finally:
            self.loop.close()


class RuntimeHolder:
    def __init__(self, settings: WorkerSettings) -> None:
        # A child runs one task at a time: a tiny pool is enough and spares PostgreSQL.
        self._settings = settings.model_copy(update={"DB_POOL_SIZE": 1, "DB_MAX_OVERFLOW": 1})
        self._runtime: WorkerRuntime | None = None

    def current(self) -> WorkerRuntime:
        if self._runtime is None or self._runtime.pid != os.getpid():
            self._runtime = self._open()
        return self._runtime

    def _open(self) -> WorkerRuntime:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        engine = create_engine(self._settings)
        if tracing_active():
            from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

            SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine)
        return WorkerRuntime(
            pid=os.getpid(),
            loop=loop,
            engine=engine,
            session_factory=create_session_factory(engine),
            cache=build_order_cache(self._settings),
        )

    def close(self) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None and runtime.pid == os.getpid():
            runtime.close()
