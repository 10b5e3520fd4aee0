"""Queue depth from the real RabbitMQ on 127.0.0.1, and the management-API helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest

from oms_operator.queue_depth import (
    QueueUnreadableError,
    RabbitMQDepthReader,
    management_queue_url,
    unacked_from_management,
    vhost_of,
)
from tests.harness import free_port
from tests.infra import RABBITMQ_MANAGEMENT_URL, RABBITMQ_URL
from tests.operator.conftest import publish
from tests.pipeline.support import eventually


@pytest.fixture
async def reader() -> AsyncIterator[RabbitMQDepthReader]:
    depth_reader = RabbitMQDepthReader(timeout=3)
    yield depth_reader
    await depth_reader.close()


async def test_ready_messages_are_counted_per_queue(
    reader: RabbitMQDepthReader, rabbit_queue: str
) -> None:
    await publish(rabbit_queue, 12)
    reading = await reader.read(RABBITMQ_URL, (rabbit_queue,))
    assert [(q.queue, q.ready, q.unacked) for q in reading.queues] == [(rabbit_queue, 12, None)]
    assert reading.total == 12
    await publish(rabbit_queue, 3)
    assert (await reader.read(RABBITMQ_URL, (rabbit_queue,))).total == 15  # same connection


async def test_a_missing_queue_is_reported_and_the_connection_survives(
    reader: RabbitMQDepthReader, rabbit_queue: str
) -> None:
    with pytest.raises(QueueUnreadableError) as raised:
        await reader.read(RABBITMQ_URL, (rabbit_queue + "-missing",))
    assert raised.value.reason == "QueueNotFound"
    await publish(rabbit_queue, 2)
    assert (await reader.read(RABBITMQ_URL, (rabbit_queue,))).total == 2


async def test_an_unreachable_broker_is_reported(reader: RabbitMQDepthReader) -> None:
    with pytest.raises(QueueUnreadableError) as raised:
        await reader.read(f"amqp://guest:guest@127.0.0.1:{free_port()}/", ("any",))
    assert raised.value.reason == "RabbitMQUnreachable"


async def test_prefetched_messages_are_invisible_to_a_passive_declare(
    reader: RabbitMQDepthReader, rabbit_queue: str
) -> None:
    """Why the management API matters: a worker holding prefetched, unacknowledged tasks empties
    the ready count although the work is not done."""
    await publish(rabbit_queue, 10)
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=8)
        queue = await channel.declare_queue(rabbit_queue, passive=True)
        held: list[aio_pika.abc.AbstractIncomingMessage] = []
        delivered = asyncio.Event()

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            held.append(message)  # never acked: a busy worker
            if len(held) == 8:
                delivered.set()

        await queue.consume(hold)
        await asyncio.wait_for(delivered.wait(), 10)
        reading = await reader.read(RABBITMQ_URL, (rabbit_queue,))
        assert reading.total == 2  # 8 of the 10 tasks are not counted at all


@pytest.fixture
async def eight_of_ten_held(rabbitmq_url: str) -> AsyncIterator[tuple[str, str]]:
    """A queue on this test's own vhost with 10 messages, 8 of them delivered to a consumer that
    never acknowledges them (a busy worker's prefetch)."""
    queue_name = "order-tasks"
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name)
        for number in range(10):
            await channel.default_exchange.publish(
                aio_pika.Message(body=f"task {number}".encode()), routing_key=queue_name
            )
        await channel.set_qos(prefetch_count=8)
        held: list[aio_pika.abc.AbstractIncomingMessage] = []
        delivered = asyncio.Event()

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            held.append(message)
            if len(held) == 8:
                delivered.set()

        await queue.consume(hold)
        await asyncio.wait_for(delivered.wait(), 10)
        yield rabbitmq_url, queue_name


async def test_the_management_api_counts_prefetched_messages(
    reader: RabbitMQDepthReader, eight_of_ten_held: tuple[str, str]
) -> None:
    """On the real management API (port 15672): the unacknowledged tasks count again, so a busy
    worker is not scaled away. Its statistics refresh every few seconds, hence the poll."""
    amqp_url, queue_name = eight_of_ten_held

    async def counted() -> tuple[int, int | None] | None:
        reading = await reader.read(amqp_url, (queue_name,), RABBITMQ_MANAGEMENT_URL)
        assert reading.management_error is None
        (depth,) = reading.queues
        return (depth.ready, depth.unacked) if depth.unacked == 8 else None

    assert await eventually(counted, 30, interval=0.5, message="8 unacked in the management API")
    reading = await reader.read(amqp_url, (queue_name,), RABBITMQ_MANAGEMENT_URL)
    assert (reading.queues[0].ready, reading.total) == (2, 10)


async def test_a_refused_management_login_keeps_the_ready_count(
    reader: RabbitMQDepthReader, eight_of_ten_held: tuple[str, str]
) -> None:
    amqp_url, queue_name = eight_of_ten_held
    wrong = RABBITMQ_MANAGEMENT_URL.replace("guest:guest@", "guest:wrong@")
    reading = await reader.read(amqp_url, (queue_name,), wrong)
    assert reading.management_error is not None
    assert "401" in reading.management_error
    assert [(q.ready, q.unacked) for q in reading.queues] == [(2, None)]


def test_vhost_and_management_urls() -> None:
    assert vhost_of("amqp://guest:guest@rabbit:5672/") == "/"
    assert vhost_of("amqp://guest:guest@rabbit:5672") == "/"
    assert vhost_of("amqp://u:p@rabbit/orders") == "orders"
    assert vhost_of("amqp://u:p@rabbit/%2Fprod") == "/prod"
    url = management_queue_url("http://admin:secret@rabbit:15672/", "/", "order tasks")
    assert str(url) == "http://rabbit:15672/api/queues/%2F/order%20tasks"
    assert "secret" not in str(url)  # credentials go in the Authorization header only
    assert unacked_from_management({"messages_unacknowledged": 5, "messages_ready": 1}) == 5
    with pytest.raises(ValueError, match="messages_unacknowledged"):
        unacked_from_management({"messages_unacknowledged": "many"})
