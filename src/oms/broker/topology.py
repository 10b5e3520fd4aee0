"""The RabbitMQ topology of the order pipeline, declared identically by every party.

RabbitMQ refuses a redeclaration whose arguments differ (PRECONDITION_FAILED), so the relay, the
consumer and the DLQ tool all declare through this one function (the worker, which publishes
its dead letters with kombu, declares the same names and arguments from oms.broker.contracts).

    exchange `orders` (direct, durable) --order.created--> queue `new_order` (quorum, durable)
    queue `new_order` --dead letters--> exchange `orders.dlx` --new_order.dlq--> `new_order.dlq`

`new_order` is a quorum queue because quorum queues count deliveries: a message that is handed
out `DELIVERY_LIMIT` times without being acked (a consumer that crashes on it, or that keeps
failing to pass it on) is dead-lettered by the broker itself, with `x-first-death-reason:
delivery_limit`, instead of circling forever.
"""

from __future__ import annotations

from dataclasses import dataclass

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from oms.broker.contracts import (
    DEAD_LETTER_EXCHANGE_NAME,
    DEAD_LETTER_QUEUE_NAME,
    EXCHANGE_NAME,
    NEW_ORDER_QUEUE_ARGUMENTS,
    QUEUE_NAME,
    ROUTING_KEY,
)


@dataclass(frozen=True, slots=True)
class Topology:
    exchange: AbstractExchange
    queue: AbstractQueue
    dead_letter_exchange: AbstractExchange
    dead_letter_queue: AbstractQueue


async def declare_topology(channel: AbstractChannel) -> Topology:
    exchange = await channel.declare_exchange(EXCHANGE_NAME, ExchangeType.DIRECT, durable=True)
    dead_letter_exchange = await channel.declare_exchange(
        DEAD_LETTER_EXCHANGE_NAME, ExchangeType.DIRECT, durable=True
    )
    dead_letter_queue = await channel.declare_queue(DEAD_LETTER_QUEUE_NAME, durable=True)
    await dead_letter_queue.bind(dead_letter_exchange, DEAD_LETTER_QUEUE_NAME)
    queue = await channel.declare_queue(
        QUEUE_NAME, durable=True, arguments=dict(NEW_ORDER_QUEUE_ARGUMENTS)
    )
    await queue.bind(exchange, ROUTING_KEY)
    return Topology(exchange, queue, dead_letter_exchange, dead_letter_queue)
