"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from oms_api.routers.health import CHECK_TIMEOUT_SECONDS
from tests.conftest import SettingsFactory, serving
from tests.infra import PG_HOST, PG_PORT


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


class StallableRelay:
    """A TCP relay to PostgreSQL that can stop forwarding, both ways, as a frozen server or a
    dropped network path looks to a client: connections stay open, nothing comes back."""

    def __init__(self) -> None:
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(65536):
                await self.flowing.wait()
                sink.write(chunk)
                await sink.drain()
        sink.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(PG_HOST, PG_PORT)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[StallableRelay]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.mark.parametrize("backend", ["postgres"])
async def test_readiness_answers_within_its_limit_while_the_database_hangs(
    make_settings: SettingsFactory,
) -> None:
    """A pooled connection to a database that stopped answering: the probe must still answer
    (503) soon after its own limit, or the kubelet's probe times out instead of reading why."""
    async with StallableRelay().running() as relay:
        settings = await make_settings(POSTGRES_HOST="127.0.0.1", POSTGRES_PORT=relay.port)
        async with serving(settings) as client:
            assert (await client.get("/health/ready")).status_code == 200  # the pool has one
            relay.flowing.clear()
            started = time.monotonic()
            ready = await client.get("/health/ready")
            elapsed = time.monotonic() - started
            relay.flowing.set()  # lets the abandoned check and the pool finish cleanly
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "error: TimeoutError"
    # The chart's probe gives it 3 s (timeoutSeconds); the check's own limit is 2 s.
    assert elapsed < CHECK_TIMEOUT_SECONDS + 0.5, f"readiness took {elapsed:.1f} s"
