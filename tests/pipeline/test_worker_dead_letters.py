"""The worker parks an order's event in `new_order.dlq` with kombu (Celery's AMQP client), as
the relay and the consumer would with aio-pika: same topology, persistent, confirmed, and
readable and replayable by `oms dlq`."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
from aio_pika import DeliveryMode

from oms.broker.contracts import (
    CONTENT_TYPE,
    DEAD_LETTER_QUEUE_NAME,
    DEAD_LETTER_REASON_HEADER,
    QUEUE_NAME,
    OrderCreatedEvent,
)
from oms.broker.topology import declare_topology
from oms.outbox.dead_letters import list_dead_letters, replay_dead_letters
from oms_worker.dead_letters import order_event_dead_letter, publish_dead_letter
from tests.pipeline.support import drain_queue, queue_depth


async def test_a_dead_letter_is_a_persistent_order_event_in_the_dlq(rabbitmq_url: str) -> None:
    event_id, order_id = uuid.uuid4(), str(uuid.uuid4())
    letter = order_event_dead_letter(event_id, order_id, "x" * 600, {"traceparent": "t"})
    # On a fresh vhost: the worker declares the topology itself.
    await asyncio.to_thread(publish_dead_letter, rabbitmq_url, letter, 5.0)

    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        # Same names and arguments as the aio-pika side: redeclaring is no PRECONDITION_FAILED.
        await declare_topology(channel)
        [message] = await drain_queue(channel, DEAD_LETTER_QUEUE_NAME)
    headers = message.headers or {}
    assert headers[DEAD_LETTER_REASON_HEADER] == "x" * 500
    assert headers["traceparent"] == "t"
    assert message.delivery_mode == DeliveryMode.PERSISTENT
    assert message.content_type == CONTENT_TYPE
    assert message.message_id == str(event_id)
    assert message.type == "order.created"
    assert message.timestamp is not None
    event = OrderCreatedEvent.model_validate_json(message.body)
    assert (event.event_id, str(event.order_id)) == (event_id, order_id)


async def test_oms_dlq_lists_and_replays_the_workers_dead_letters(rabbitmq_url: str) -> None:
    letter = order_event_dead_letter(uuid.uuid4(), str(uuid.uuid4()), "processing failed")
    await asyncio.to_thread(publish_dead_letter, rabbitmq_url, letter, 5.0)

    [listed] = await list_dead_letters(rabbitmq_url, limit=10)
    assert (listed.message_id, listed.reason) == (letter.message_id, "processing failed")
    assert await replay_dead_letters(rabbitmq_url, limit=10) == 1
    assert await queue_depth(rabbitmq_url, DEAD_LETTER_QUEUE_NAME) == 0
    assert await queue_depth(rabbitmq_url, QUEUE_NAME) == 1
