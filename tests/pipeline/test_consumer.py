"""The consumer against the real broker: dead-lettering and graceful shutdown."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from oms.broker.celery_app import create_celery_app
from oms.broker.contracts import (
    CONTENT_TYPE,
    DEAD_LETTER_QUEUE_NAME,
    DEAD_LETTER_REASON_HEADER,
    QUEUE_NAME,
    OrderCreatedEvent,
)
from oms.settings import Settings
from oms_consumer.dispatch import CeleryDispatcher
from oms_consumer.service import OrderEventConsumer
from tests.conftest import SettingsFactory
from tests.harness import free_port
from tests.pipeline.support import (
    broker_url,
    eventually,
    publish,
    queue_depth,
    wait_for_queue_depth,
)


class GatedDispatcher:
    """Holds each dispatch until released: lets a test catch the consumer mid-message."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.dispatched: list[OrderCreatedEvent] = []

    async def dispatch(self, event: OrderCreatedEvent, trace: dict[str, str]) -> None:
        self.entered.set()
        await self.release.wait()
        self.dispatched.append(event)

    def close(self) -> None:
        return None


def an_event() -> OrderCreatedEvent:
    return OrderCreatedEvent(
        event_id=uuid.uuid4(), order_id=uuid.uuid4(), occurred_at=datetime.now(UTC)
    )


async def dead_letters(url: str) -> list[AbstractIncomingMessage]:
    connection = await aio_pika.connect(url)
    async with connection:
        queue = await (await connection.channel()).get_queue(DEAD_LETTER_QUEUE_NAME)
        found = []
        while (message := await queue.get(fail=False, timeout=5)) is not None:
            await message.ack()
            found.append(message)
        return found


def celery_consumer(settings: Settings, attempts: int = 1) -> OrderEventConsumer:
    return OrderEventConsumer(
        settings,
        CeleryDispatcher(create_celery_app(settings), attempts=attempts, retry_delay_seconds=0.05),
    )


async def dead_letter_of(
    settings: Settings,
    body: bytes,
    content_type: str = CONTENT_TYPE,
    *,
    timeout: float,
    waiting_for: str,
) -> AbstractIncomingMessage:
    """Publish `body` to a running Celery consumer; the one message it dead-letters."""
    url = broker_url(settings)
    consumer = celery_consumer(settings)
    try:
        assert await consumer.start()
        await publish(url, body, content_type)
        await wait_for_queue_depth(url, DEAD_LETTER_QUEUE_NAME, 1, timeout, waiting_for)
    finally:
        await consumer.stop()
    [message] = await dead_letters(url)
    return message


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"{not json", CONTENT_TYPE, "not an order.created v1 event"),
        (b'{"event": "order.created", "version": 2}', CONTENT_TYPE, "version"),
        (b"<order/>", "application/xml", "unsupported content type"),
    ],
)
async def test_unparseable_message_goes_to_the_dlq_with_its_reason(
    pipeline_settings_factory: SettingsFactory, body: bytes, content_type: str, reason: str
) -> None:
    settings = await pipeline_settings_factory()
    url = broker_url(settings)
    message = await dead_letter_of(
        settings, body, content_type, timeout=10, waiting_for="the poison message in the DLQ"
    )
    assert message.body == body
    assert reason in str((message.headers or {})[DEAD_LETTER_REASON_HEADER])
    assert await queue_depth(url, QUEUE_NAME) == 0


async def test_message_that_keeps_failing_is_dead_lettered_by_the_delivery_limit(
    pipeline_settings_factory: SettingsFactory,
) -> None:
    # Celery's broker is unreachable, so every hand-over fails and the message is requeued.
    settings = await pipeline_settings_factory(
        CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    )
    event = an_event()
    message = await dead_letter_of(
        settings,
        event.model_dump_json().encode(),
        timeout=60,
        waiting_for="the delivery limit to dead-letter",
    )
    headers = message.headers or {}
    assert headers["x-first-death-reason"] == "delivery_limit"
    assert OrderCreatedEvent.model_validate_json(message.body) == event


async def test_sigterm_path_finishes_the_in_flight_message_before_closing(
    pipeline_settings_factory: SettingsFactory,
) -> None:
    settings = await pipeline_settings_factory()
    url = broker_url(settings)
    dispatcher = GatedDispatcher()
    consumer = OrderEventConsumer(settings, dispatcher)
    event = an_event()
    assert await consumer.start()
    await publish(url, event.model_dump_json().encode())
    await asyncio.wait_for(dispatcher.entered.wait(), 10)

    stopping = asyncio.create_task(consumer.stop())

    async def unsubscribed() -> bool:
        return not consumer.checks()["consuming"]

    await eventually(unsubscribed, 5, message="the subscription to be cancelled")
    assert not stopping.done()  # still waiting for the message in hand
    dispatcher.release.set()
    await asyncio.wait_for(stopping, 10)
    assert dispatcher.dispatched == [event]
    # Acked before the connection closed: nothing is left to redeliver.
    assert await queue_depth(url, QUEUE_NAME) == 0
