"""The outbox relay against the real broker and database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aio_pika
import orjson
import pytest
from aio_pika import DeliveryMode
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.backoff import exponential_delay
from oms.broker.contracts import CONTENT_TYPE, QUEUE_NAME, OrderCreatedEvent
from oms.db.models import OutboxEvent
from oms.db.session import create_engine, create_session_factory
from oms.outbox.destinations import RabbitPublisher
from oms.outbox.relay import INITIAL_BACKOFF_SECONDS, OutboxRelay
from tests.conftest import SettingsFactory, api_client
from tests.harness import free_port
from tests.pipeline.support import (
    create_orders,
    create_orders_directly,
    database_sessions,
    drain_queue,
    eventually,
    register_and_login,
    unsent_outbox_count,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def rabbit_relay(
    url: str, factory: async_sessionmaker[AsyncSession], batch_size: int = 100
) -> OutboxRelay:
    return OutboxRelay(factory, RabbitPublisher(url, 5.0), asyncio.Event(), batch_size=batch_size)


async def drain_relay(relay: OutboxRelay) -> int:
    moved = 0
    while (outcome := await relay.relay_once()).claimed:
        assert outcome.refused == 0
        moved += outcome.delivered
    return moved


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    delays = [exponential_delay(failures, INITIAL_BACKOFF_SECONDS, 3.0) for failures in range(7)]
    assert delays == [0.0, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0]
    assert exponential_delay(10_000, INITIAL_BACKOFF_SECONDS, 30.0) == 30.0


async def test_relay_publishes_persistent_confirmed_messages_and_marks_them_sent(
    pipeline_settings_factory: SettingsFactory,
) -> None:
    settings = await pipeline_settings_factory()
    assert settings.RABBITMQ_URL
    order_ids = await create_orders_directly(settings, 3, {"traceparent": TRACEPARENT})
    engine = create_engine(settings)
    factory = create_session_factory(engine)
    relay = rabbit_relay(settings.RABBITMQ_URL, factory)
    try:
        outcome = await relay.relay_once()
        assert (outcome.claimed, outcome.delivered) == (3, 3)
        assert await unsent_outbox_count(settings) == 0
        assert (await relay.relay_batch()).claimed == 0  # nothing is sent twice

        async with factory() as session:
            rows = {row.id: row for row in (await session.execute(select(OutboxEvent))).scalars()}
        connection = await aio_pika.connect(settings.RABBITMQ_URL)
        async with connection:
            messages = await drain_queue(await connection.channel(), QUEUE_NAME)
        events = [OrderCreatedEvent.model_validate(orjson.loads(m.body)) for m in messages]
        assert sorted(event.order_id for event in events) == sorted(order_ids)
        for message, event in zip(messages, events, strict=True):
            assert message.message_id == str(event.event_id)
            assert rows[event.event_id].sent_at is not None
            assert rows[event.event_id].attempts == 1
            assert message.content_type == CONTENT_TYPE
            assert message.type == "order.created"
            assert message.delivery_mode == DeliveryMode.PERSISTENT
            assert message.timestamp is not None
            # Same trace; the parent span is the relay's own when tracing is on in this process.
            sent = str((message.headers or {}).get("traceparent"))
            assert sent.split("-")[1] == TRACEPARENT.split("-")[1]
    finally:
        await relay.stop()
        await engine.dispose()


async def test_api_answers_201_while_rabbitmq_is_unreachable_and_rows_wait(
    pipeline_settings_factory: SettingsFactory,
) -> None:
    good = await pipeline_settings_factory()
    assert good.RABBITMQ_URL
    closed_port = free_port()  # nothing listens there
    settings = good.model_copy(
        update={
            "RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{closed_port}/",
            "RUN_OUTBOX_RELAY": True,
        }
    )
    async with api_client(settings) as (app, http):
        token = await register_and_login(http)
        await create_orders(http, token, 5)
        relay: OutboxRelay | None = app.state.oms.outbox_relay
        assert relay is not None

        async def relay_failed_twice() -> bool:
            return relay.stats.consecutive_failures >= 2

        await eventually(relay_failed_twice, 10, message="the relay to fail against a dead port")
        assert relay.stats.delivered == 0
        assert await unsent_outbox_count(settings) == 5

    # The broker is back (here: the right address): the waiting rows go out, once.
    engine = create_engine(good)
    recovered = rabbit_relay(good.RABBITMQ_URL, create_session_factory(engine))
    try:
        assert await drain_relay(recovered) == 5
        assert await unsent_outbox_count(good) == 0
    finally:
        await recovered.stop()
        await engine.dispose()
    connection = await aio_pika.connect(good.RABBITMQ_URL)
    async with connection:
        assert len(await drain_queue(await connection.channel(), QUEUE_NAME)) == 5


async def test_two_relays_on_postgres_never_publish_the_same_event_twice(
    pipeline_settings_factory: SettingsFactory,
) -> None:
    settings = await pipeline_settings_factory()
    assert settings.RABBITMQ_URL
    count = 300
    await create_orders_directly(settings, count)
    engines = [create_engine(settings), create_engine(settings)]
    relays = [
        rabbit_relay(settings.RABBITMQ_URL, create_session_factory(engine), batch_size=10)
        for engine in engines
    ]
    try:
        moved = await asyncio.gather(*(drain_relay(relay) for relay in relays))
    finally:
        for relay in relays:
            await relay.stop()
        for engine in engines:
            await engine.dispose()
    assert sum(moved) == count
    assert all(share > 0 for share in moved), moved  # both really competed for rows
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    async with connection:
        messages = await drain_queue(await connection.channel(), QUEUE_NAME)
    ids = [message.message_id for message in messages]
    assert len(ids) == count
    assert len(set(ids)) == count


async def test_relay_wakes_on_the_signal_not_the_poll_interval(
    pipeline_settings_factory: SettingsFactory,
) -> None:
    # A poll interval far longer than the test: only the API's wake-up can explain delivery.
    settings = await pipeline_settings_factory(RUN_OUTBOX_RELAY=True, OUTBOX_POLL_SECONDS=600)
    async with api_client(settings) as (app, http):
        token = await register_and_login(http)
        relay: OutboxRelay | None = app.state.oms.outbox_relay
        assert relay is not None

        async def idle() -> bool:
            return relay.stats.delivered == 0 and relay.stats.consecutive_failures == 0

        await eventually(idle, 5, message="the relay to connect")
        await create_orders(http, token, 2)

        async def delivered() -> bool:
            return relay.stats.delivered == 2

        await eventually(delivered, 10, message="the wake-up to trigger delivery")
    assert await unsent_outbox_count(settings) == 0


@pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)
async def test_purge_removes_only_sent_rows_past_retention(
    pipeline_settings_factory: SettingsFactory,
) -> None:
    settings = await pipeline_settings_factory()
    await create_orders_directly(settings, 4)
    now = datetime.now(UTC)
    async with database_sessions(settings) as factory:
        async with factory() as session, session.begin():
            ids = list((await session.execute(select(OutboxEvent.id))).scalars())
            ages = {
                ids[0]: timedelta(hours=30),
                ids[1]: timedelta(hours=25),
                ids[2]: timedelta(hours=1),
            }
            for event_id, age in ages.items():
                await session.execute(
                    update(OutboxEvent).where(OutboxEvent.id == event_id).values(sent_at=now - age)
                )
        relay = OutboxRelay(
            factory,
            RabbitPublisher("amqp://unused/", 1.0),
            asyncio.Event(),
            retention=timedelta(hours=24),
        )
        assert await relay.purge_sent(now) == 2
        async with factory() as session:
            left = set((await session.execute(select(OutboxEvent.id))).scalars())
        assert left == {ids[2], ids[3]}  # recent sent row and the unsent one stay
