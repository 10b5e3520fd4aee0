"""The `order.created` event: its names on the broker and its versioned JSON body."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

EXCHANGE_NAME = "orders"
QUEUE_NAME = "new_order"
ROUTING_KEY = "order.created"
DEAD_LETTER_QUEUE_NAME = "new_order.dlq"
CONTENT_TYPE = "application/json"


class OrderCreatedEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    event: Literal["order.created"] = "order.created"
    version: Literal[1] = 1
    event_id: uuid.UUID
    order_id: uuid.UUID
    occurred_at: datetime
