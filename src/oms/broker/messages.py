"""Pure translations between outbox rows, AMQP messages and the versioned event."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from oms.broker.contracts import CONTENT_TYPE, OrderCreatedEvent


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """What the relay needs of an outbox row, detached from the database session."""

    id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    created_at: datetime
    headers: dict[str, str] = field(default_factory=dict)


def persistent_copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> Message:
    """A received message to publish again (dead-lettering, replay): same body and identity,
    the given headers, persistent."""
    return Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        message_id=message.message_id,
        type=message.type,
        timestamp=message.timestamp,
        delivery_mode=DeliveryMode.PERSISTENT,
    )


class UnparseableMessageError(ValueError):
    """The body is not an event we understand; redelivering it would never help.

    `reason` is a short fixed word (a metric label): `content_type` or `invalid_event`.
    """

    def __init__(self, message: str, reason: str = "invalid_event") -> None:
        super().__init__(message)
        self.reason = reason


def build_message(record: OutboxRecord) -> Message:
    return Message(
        orjson.dumps(record.payload),
        content_type=CONTENT_TYPE,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=str(record.id),
        type=record.event_type,
        timestamp=record.created_at,
        headers=dict(record.headers),
    )


def parse_order_event(body: bytes, content_type: str | None) -> OrderCreatedEvent:
    if content_type not in (None, CONTENT_TYPE):
        raise UnparseableMessageError(
            f"unsupported content type {content_type!r}", reason="content_type"
        )
    try:
        return OrderCreatedEvent.model_validate_json(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or 'body'}: {issue['msg']}"
            for issue in error.errors()[:3]
        )
        raise UnparseableMessageError(f"not an order.created v1 event: {problems}") from error


def trace_context(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The propagation headers (traceparent, tracestate, baggage, ...) of an AMQP message.

    Broker bookkeeping (`x-*`) and non-string values are not trace context and are dropped.
    """
    if not headers:
        return {}
    return {
        key: value
        for key, value in headers.items()
        if isinstance(value, str) and not key.lower().startswith("x-")
    }
