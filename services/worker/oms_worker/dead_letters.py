"""Park an order's event in `new_order.dlq` when its task failed for good, with Celery's kombu.

The message is an `order.created` v1 event, so `oms dlq replay` sends it back through
`new_order` and the consumer dispatches a fresh task (same event id, so the same task id). The
task does not carry the original event time: `occurred_at` is the time of dead-lettering.

Publishing declares the same topology as the relay and the consumer (names and queue arguments
from oms.broker.contracts: RabbitMQ refuses a redeclaration that differs), is persistent,
mandatory (an unroutable letter raises) and waits for the broker's confirm.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from kombu import Connection, Exchange, Queue

from oms.broker.contracts import (
    CONTENT_TYPE,
    DEAD_LETTER_EXCHANGE_NAME,
    DEAD_LETTER_QUEUE_NAME,
    DEAD_LETTER_REASON_HEADER,
    EXCHANGE_NAME,
    NEW_ORDER_QUEUE_ARGUMENTS,
    QUEUE_NAME,
    ROUTING_KEY,
)

# The reason travels in a header: keep it well under the broker's frame limits.
MAX_REASON_CHARACTERS = 500
PERSISTENT = 2  # AMQP delivery mode

ORDERS_EXCHANGE = Exchange(EXCHANGE_NAME, type="direct", durable=True)
DEAD_LETTER_EXCHANGE = Exchange(DEAD_LETTER_EXCHANGE_NAME, type="direct", durable=True)
TOPOLOGY = (
    Queue(
        DEAD_LETTER_QUEUE_NAME,
        DEAD_LETTER_EXCHANGE,
        routing_key=DEAD_LETTER_QUEUE_NAME,
        durable=True,
    ),
    Queue(
        QUEUE_NAME,
        ORDERS_EXCHANGE,
        routing_key=ROUTING_KEY,
        durable=True,
        queue_arguments=dict(NEW_ORDER_QUEUE_ARGUMENTS),
    ),
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    body: bytes
    message_id: str
    headers: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


def order_event_dead_letter(
    event_id: uuid.UUID, order_id: str, reason: str, headers: dict[str, str] | None = None
) -> DeadLetter:
    """The `order.created` v1 event of `order_id`, with `reason` in its headers."""
    body = {
        "event": "order.created",
        "version": 1,
        "event_id": str(event_id),
        "order_id": order_id,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    return DeadLetter(
        orjson.dumps(body),
        str(event_id),
        {**(headers or {}), DEAD_LETTER_REASON_HEADER: reason[:MAX_REASON_CHARACTERS]},
    )


def publish_dead_letter(url: str, letter: DeadLetter, timeout_seconds: float) -> None:
    """Publish to `new_order.dlq` and wait for the broker's confirm; raises if it did not."""
    with Connection(
        url,
        connect_timeout=timeout_seconds,
        transport_options={"confirm_publish": True},
    ) as connection:
        connection.connect()  # once, within connect_timeout: the task must not hang on it
        # Delivery: routed (mandatory) and confirmed, declaring what it needs, no retry loop.
        delivery: dict[str, Any] = {
            "exchange": DEAD_LETTER_EXCHANGE,
            "routing_key": DEAD_LETTER_QUEUE_NAME,
            "declare": list(TOPOLOGY),
            "mandatory": True,
            "retry": False,
            "timeout": timeout_seconds,
            "confirm_timeout": timeout_seconds,
        }
        # The message: the body as it is (no kombu serializer), persistent, with its identity.
        properties: dict[str, Any] = {
            "serializer": None,
            "content_type": CONTENT_TYPE,
            "content_encoding": "utf-8",
            "delivery_mode": PERSISTENT,
            "message_id": letter.message_id,
            "type": "order.created",
            "timestamp": int(letter.timestamp.timestamp()),  # AMQP: whole seconds
            "headers": letter.headers,
        }
        connection.Producer().publish(letter.body, **delivery, **properties)
