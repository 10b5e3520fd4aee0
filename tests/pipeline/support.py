"""Helpers for pipeline and end-to-end tests: RabbitMQ vhosts, service processes, polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import httpx
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.broker.contracts import CONTENT_TYPE, EXCHANGE_NAME, ROUTING_KEY
from oms.cache import MemoryOrderCache, OrderCache
from oms.db.models import Order, OutboxEvent
from oms.db.session import create_engine, create_session_factory
from oms.orders.service import OrderService
from oms.resources import build_order_cache
from oms.schemas import OrderCreate
from oms.settings import Settings
from oms.users.repository import UserRepository
from tests.conftest import register
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
@contextlib.asynccontextmanager
async def database_sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on an engine of the test's own, disposed on the way out."""
    engine = create_engine(settings)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def order_cache(settings: Settings) -> AsyncIterator[OrderCache]:
    """The cache the settings configure, closed on the way out."""
    cache = build_order_cache(settings)
    try:
        yield cache
    finally:
        await cache.close()


@dataclass(frozen=True)
class OrderRow:
    id: uuid.UUID
    version: int
    processed: bool


async def order_rows(settings: Settings) -> dict[uuid.UUID, OrderRow]:
    async with database_sessions(settings) as factory, factory() as session:
        rows = (await session.execute(select(Order))).scalars()
        return {row.id: OrderRow(row.id, row.version, row.processed_at is not None) for row in rows}


async def unsent_outbox_count(settings: Settings) -> int:
    async with database_sessions(settings) as factory, factory() as session:
        unsent = select(OutboxEvent.id).where(OutboxEvent.sent_at.is_(None))
        return len((await session.execute(unsent)).all())


async def assert_processed_exactly_once(
    settings: Settings, order_ids: Sequence[str | uuid.UUID]
) -> None:
    """Each order processed, and by exactly one effective run: its version went 1 -> 2 once."""
    rows = await order_rows(settings)
    wanted = [rows[uuid.UUID(str(order_id))] for order_id in order_ids]
    assert all(row.processed for row in wanted)
    versions = {row.version for row in wanted}
    assert versions == {2}, f"versions seen: {versions}"
    assert await unsent_outbox_count(settings) == 0


# --- RabbitMQ views -------------------------------------------------------------------------
async def drain_queue(channel: AbstractChannel, queue_name: str) -> list[AbstractIncomingMessage]:
    """Take (and ack) every message currently in a queue."""
    queue: AbstractQueue = await channel.get_queue(queue_name, ensure=False)
    taken: list[AbstractIncomingMessage] = []
    while (message := await queue.get(fail=False, timeout=5)) is not None:
        await message.ack()
        taken.append(message)
    return taken


async def publish(url: str, body: bytes, content_type: str = CONTENT_TYPE) -> None:
    """`body` as one confirmed message to the order exchange, as any producer might send it."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE_NAME)
        await exchange.publish(
            aio_pika.Message(body, content_type=content_type, message_id=str(uuid.uuid4())),
            ROUTING_KEY,
        )


async def queue_depth(url: str, queue_name: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue_name, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def wait_for_queue_depth(
    url: str, queue_name: str, depth: int, timeout: float, message: str
) -> None:
    """Poll until `queue_name` holds exactly `depth` ready messages."""

    async def reached() -> bool:
        return await queue_depth(url, queue_name) == depth

    await eventually(reached, timeout, message=message)


def broker_url(settings: Settings) -> str:
    """The settings' RABBITMQ_URL, which a broker-mode test cannot do without."""
    assert settings.RABBITMQ_URL
    return settings.RABBITMQ_URL


# --- service processes (tests.harness) --------------------------------------------------------
def member_process(
    member: str,
    port_setting: str,
    settings: Settings,
    workdir: Path,
    port: int,
    env: dict[str, Any],
) -> ServiceProcess:
    """The member's console script `oms-<member>`, ready once its /health/ready on `port` is."""
    return ServiceProcess(
        member,
        [str(VENV_BIN / f"oms-{member}")],
        settings_env(settings, **{port_setting: port}, **env),
        workdir,
        f"http://127.0.0.1:{port}/health/ready",
    )


def api_process(settings: Settings, workdir: Path, port: int, **env: Any) -> ServiceProcess:
    return member_process("api", "PORT", settings, workdir, port, env)


def consumer_process(settings: Settings, workdir: Path, port: int, **env: Any) -> ServiceProcess:
    return member_process("consumer", "CONSUMER_METRICS_PORT", settings, workdir, port, env)


def worker_process(settings: Settings, workdir: Path, port: int, **env: Any) -> ServiceProcess:
    return member_process("worker", "WORKER_METRICS_PORT", settings, workdir, port, env)


# --- through the API (in process: tests.conftest.api_client) --------------------------------
async def register_and_login(http: httpx.AsyncClient, email: str = "pipe@example.com") -> str:
    """A bearer token for a fresh account."""
    return (await register(http, email)).token


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
    async with database_sessions(settings) as factory, factory() as session, session.begin():
        email = f"{uuid.uuid4().hex[:10]}@example.com"
        return (await UserRepository(session).add(email, "not-a-real-hash")).id


async def create_orders_directly(
    settings: Settings, count: int, trace_headers: dict[str, str] | None = None
) -> list[uuid.UUID]:
    """Orders (each with its outbox row) through OrderService, without the API."""
    user_id = await make_user(settings)
    async with database_sessions(settings) as factory:
        service = OrderService(factory, MemoryOrderCache(60))
        body = OrderCreate.model_validate(ORDER_BODY)
        return [
            (await service.create(user_id, body, trace_headers=trace_headers)).order.id
            for _ in range(count)
        ]
