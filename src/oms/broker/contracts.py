"""The `order.created` event: its names on the broker and its versioned JSON body.

Plain names and values only (no AMQP client): the relay and the consumer declare them with
aio-pika (oms.broker.topology), the worker publishes its dead letters with Celery's kombu.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

EXCHANGE_NAME = "orders"
QUEUE_NAME = "new_order"
ROUTING_KEY = "order.created"
DEAD_LETTER_QUEUE_NAME = "new_order.dlq"
CONTENT_TYPE = "application/json"
DEAD_LETTER_EXCHANGE_NAME: Final = "orders.dlx"
# Part of the queue's identity (see oms.broker.topology): change it through a policy, not here.
DELIVERY_LIMIT: Final = 5
# Header set on a message dead-lettered by our own code (the consumer when it cannot parse it,
# the worker when processing failed for good), saying why.
DEAD_LETTER_REASON_HEADER: Final = "x-oms-dead-letter-reason"

NEW_ORDER_QUEUE_ARGUMENTS: Final[dict[str, str | int]] = {
    "x-queue-type": "quorum",
    "x-delivery-limit": DELIVERY_LIMIT,
    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE_NAME,
    "x-dead-letter-routing-key": DEAD_LETTER_QUEUE_NAME,
}


class OrderCreatedEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    event: Literal["order.created"] = "order.created"
    version: Literal[1] = 1
    event_id: uuid.UUID
    order_id: uuid.UUID
    occurred_at: datetime
