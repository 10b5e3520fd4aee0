"""The consumer's queue-depth poll against a real RabbitMQ (own vhost)."""

from __future__ import annotations

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import REGISTRY

from oms.broker.contracts import DEAD_LETTER_QUEUE_NAME, QUEUE_NAME
from oms.broker.queue_depth import QueueNotFoundError, read_queue_state
from oms.broker.topology import declare_topology
from oms_consumer.consumer_metrics import QUEUE_MESSAGES
from oms_consumer.queue_depth_poller import QueueDepthMonitor


def gauge(name: str, queue: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"queue": queue})


async def test_poll_exports_depth_and_consumers_drops_missing_queues_and_leaks_no_channel(
    rabbitmq_vhost_url: str,
) -> None:
    missing = "oms_test_never_declared"
    connection = await aio_pika.connect_robust(rabbitmq_vhost_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        topology = await declare_topology(channel)
        for body in (b"one", b"two"):
            await channel.default_exchange.publish(
                aio_pika.Message(body), routing_key=DEAD_LETTER_QUEUE_NAME
            )

        async def settle(message: AbstractIncomingMessage) -> None:
            await message.ack()

        await topology.queue.consume(settle)
        QUEUE_MESSAGES.labels(missing).set(7)  # a stale reading, to be dropped
        monitor = QueueDepthMonitor(
            lambda: connection, queues=(QUEUE_NAME, DEAD_LETTER_QUEUE_NAME, missing)
        )
        assert connection.transport is not None
        channels_before = len(connection.transport.connection.channels)
        for _ in range(3):
            assert await monitor.poll()
        assert gauge("oms_queue_messages", DEAD_LETTER_QUEUE_NAME) == 2
        assert gauge("oms_queue_consumers", DEAD_LETTER_QUEUE_NAME) == 0
        assert gauge("oms_queue_messages", QUEUE_NAME) == 0
        assert gauge("oms_queue_consumers", QUEUE_NAME) == 1
        assert gauge("oms_queue_messages", missing) is None
        assert (REGISTRY.get_sample_value("oms_queue_last_poll_timestamp_seconds") or 0) > 0
        # A miss closes its channel on the broker side; nothing reopens it behind our back.
        assert len(connection.transport.connection.channels) == channels_before
    assert not await QueueDepthMonitor(lambda: connection).poll()  # closed: nothing to read


async def test_the_shared_read_tells_a_missing_queue_from_a_counted_one(
    rabbitmq_vhost_url: str,
) -> None:
    """`oms.broker.queue_depth` on a plain (not robust) connection, the way the operator connects:
    counts for a queue that exists, QueueNotFoundError for one that does not, and the
    connection stays usable after the miss."""
    connection = await aio_pika.connect(rabbitmq_vhost_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel)
        await channel.default_exchange.publish(
            aio_pika.Message(b"one"), routing_key=DEAD_LETTER_QUEUE_NAME
        )
        with pytest.raises(QueueNotFoundError):
            await read_queue_state(connection, "oms_test_never_declared")
        state = await read_queue_state(connection, DEAD_LETTER_QUEUE_NAME)
        assert (state.messages, state.consumers) == (1, 0)
