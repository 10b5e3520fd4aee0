"""Helpers for pipeline and end-to-end tests: RabbitMQ vhosts, service processes, polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import httpx
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from fastapi import FastAPI
from sqlalchemy import select

from oms.cache import MemoryOrderCache
from oms.db.models import Order, OutboxEvent
from oms.db.session import create_engine, create_session_factory
from oms.orders.service import OrderService
from oms.schemas import OrderCreate
from oms.settings import Settings
from oms.users.repository import UserRepository
from oms_api.app import create_app
from tests.harness import ServiceProcess, settings_env

T = TypeVar("T")

RABBITMQ_HOST = "127.0.0.1"
RABBITMQ_PORT = int(os.environ.get("TEST_RABBITMQ_PORT", "5672"))
RABBITMQCTL = os.environ.get("TEST_RABBITMQCTL", "rabbitmqctl")
VENV_BIN = Path(sys.executable).parent


async def run_command(*argv: str, env: Mapping[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env) if env is not None else None,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{argv} failed ({process.returncode}): {text}")
    return text


async def create_vhost(name: str, ctl: tuple[str, ...] = (RABBITMQCTL,)) -> None:
    await run_command(*ctl, "add_vhost", name, "-q")
    await run_command(*ctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*", "-q")


async def delete_vhost(name: str, ctl: tuple[str, ...] = (RABBITMQCTL,)) -> None:
    await run_command(*ctl, "delete_vhost", name, "-q")


def amqp_url(vhost: str, port: int = RABBITMQ_PORT) -> str:
    return f"amqp://guest:guest@{RABBITMQ_HOST}:{port}/{vhost}"


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    timeout: float,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Poll `check` until it returns something truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


# --- database views -------------------------------------------------------------------------
@dataclass(frozen=True)
class OrderRow:
    id: uuid.UUID
    version: int
    processed: bool


async def order_rows(settings: Settings) -> dict[uuid.UUID, OrderRow]:
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            rows = (await session.execute(select(Order))).scalars()
            return {
                row.id: OrderRow(row.id, row.version, row.processed_at is not None) for row in rows
            }
    finally:
        await engine.dispose()


async def unsent_outbox_count(settings: Settings) -> int:
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            rows = (
                await session.execute(select(OutboxEvent.id).where(OutboxEvent.sent_at.is_(None)))
            ).all()
            return len(rows)
    finally:
        await engine.dispose()


# --- RabbitMQ views -------------------------------------------------------------------------
async def drain_queue(channel: AbstractChannel, queue_name: str) -> list[AbstractIncomingMessage]:
    """Take (and ack) every message currently in a queue."""
    queue: AbstractQueue = await channel.get_queue(queue_name, ensure=False)
    taken: list[AbstractIncomingMessage] = []
    while (message := await queue.get(fail=False, timeout=5)) is not None:
        await message.ack()
        taken.append(message)
    return taken


async def queue_depth(url: str, queue_name: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue_name, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


# --- service processes (tests.harness) --------------------------------------------------------
def api_process(settings: Settings, workdir: Path, port: int, **env: Any) -> ServiceProcess:
    return ServiceProcess(
        "api",
        [str(VENV_BIN / "oms-api")],
        settings_env(settings, PORT=port, **env),
        workdir,
        f"http://127.0.0.1:{port}/health/ready",
    )


def consumer_process(settings: Settings, workdir: Path, port: int, **env: Any) -> ServiceProcess:
    return ServiceProcess(
        "consumer",
        [str(VENV_BIN / "oms-consumer")],
        settings_env(settings, CONSUMER_METRICS_PORT=port, **env),
        workdir,
        f"http://127.0.0.1:{port}/health/ready",
    )


def worker_process(settings: Settings, workdir: Path, port: int, **env: Any) -> ServiceProcess:
    return ServiceProcess(
        "worker",
        [str(VENV_BIN / "oms-worker")],
        settings_env(settings, WORKER_METRICS_PORT=port, **env),
        workdir,
        f"http://127.0.0.1:{port}/health/ready",
    )


# --- in-process API -------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("203.0.113.20", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield application, http


async def register_and_login(http: httpx.AsyncClient, email: str = "pipe@example.com") -> str:
    """A bearer token for a fresh account."""
    password = "secret123"
    registered = await http.post("/register", json={"email": email, "password": password})
    assert registered.status_code == 201, registered.text
    token = await http.post("/token", data={"username": email, "password": password})
    assert token.status_code == 200, token.text
    return str(token.json()["access_token"])


ORDER_BODY = {"items": [{"name": "book", "quantity": 2}], "total_price": "19.90"}


async def create_orders(http: httpx.AsyncClient, token: str, count: int) -> list[str]:
    """POST `count` orders (16 at a time); every one must be accepted with 201."""
    limit = asyncio.Semaphore(16)

    async def create_one() -> str:
        async with limit:
            response = await http.post(
                "/orders/", json=ORDER_BODY, headers={"Authorization": f"Bearer {token}"}
            )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    return list(await asyncio.gather(*(create_one() for _ in range(count))))


# --- direct data set-up ---------------------------------------------------------------------
async def make_user(settings: Settings) -> int:
    """A user row to own orders (created directly: these tests are not about the API)."""
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            email = f"{uuid.uuid4().hex[:10]}@example.com"
            return (await UserRepository(session).add(email, "not-a-real-hash")).id
    finally:
        await engine.dispose()


async def create_orders_directly(
    settings: Settings, count: int, trace_headers: dict[str, str] | None = None
) -> list[uuid.UUID]:
    """Orders (each with its outbox row) through OrderService, without the API."""
    user_id = await make_user(settings)
    engine = create_engine(settings)
    cache = MemoryOrderCache(60)
    try:
        service = OrderService(create_session_factory(engine), cache)
        body = OrderCreate.model_validate(ORDER_BODY)
        return [
            (await service.create(user_id, body, trace_headers=trace_headers)).order.id
            for _ in range(count)
        ]
    finally:
        await engine.dispose()
