"""Where the outbox relay delivers events: RabbitMQ with publisher confirms, or (embedded mode,
no RabbitMQ configured) straight into the processing function in this process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractExchange, PublishResultType
from aio_pika.exceptions import AMQPException
from pamqp.commands import Basic
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.cache import OrderCache
from oms.messaging.contracts import EXCHANGE_NAME, ROUTING_KEY, OrderCreatedEvent
from oms.pipeline.messages import OutboxRecord, build_message
from oms.pipeline.processing import process_order
from oms.pipeline.topology import Topology, declare_topology
from oms.telemetry import context_from_headers, current_trace_headers, instrument_aio_pika, tracer

logger = logging.getLogger("oms.pipeline.sinks")
_tracer = tracer("oms.pipeline.relay")


RABBITMQ_SPAN_ATTRIBUTES = {
    "messaging.system": "rabbitmq",
    "messaging.destination.name": EXCHANGE_NAME,
    "messaging.rabbitmq.destination.routing_key": ROUTING_KEY,
}


def _relay_span_attributes(record: OutboxRecord) -> dict[str, str]:
    return {
        "messaging.message.id": str(record.id),
        "oms.event_type": record.event_type,
        "oms.order_id": str(record.payload.get("order_id", "")),
    }


class SinkUnavailableError(ConnectionError):
    """The destination cannot take events right now; the relay backs off and retries."""


class EventSink(Protocol):
    async def connect(self) -> None:
        """Make sure the destination is reachable; raise SinkUnavailableError if not."""

    async def deliver(self, records: Sequence[OutboxRecord]) -> list[bool]:
        """Hand over a batch; for each record, whether the destination accepted it for good."""

    async def close(self) -> None: ...


class RabbitPublisher:
    """One long-lived connection and confirming channel; a batch is published concurrently and
    each message counts as delivered only once the broker acked it (routed, and persisted to
    the durable queue)."""

    def __init__(self, url: str, timeout_seconds: float) -> None:
        instrument_aio_pika()
        self._url = url
        self._timeout = timeout_seconds
        self._connection: AbstractConnection | None = None
        self._topology: Topology | None = None

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def connect(self) -> None:
        if self.connected and self._topology is not None:
            return
        await self.close()
        try:
            self._connection = await aio_pika.connect(self._url, timeout=self._timeout)
            channel = await self._connection.channel(publisher_confirms=True)
            self._topology = await asyncio.wait_for(declare_topology(channel), self._timeout)
        except (AMQPException, OSError, TimeoutError) as error:
            await self.close()
            raise SinkUnavailableError(f"RabbitMQ unavailable: {error!r}") from error

    async def deliver(self, records: Sequence[OutboxRecord]) -> list[bool]:
        if self._topology is None:
            raise SinkUnavailableError("not connected")
        exchange = self._topology.exchange
        confirmations = await asyncio.gather(
            *(self._publish(exchange, record) for record in records),
            return_exceptions=True,
        )
        delivered = [isinstance(confirmation, Basic.Ack) for confirmation in confirmations]
        errors = [item for item in confirmations if isinstance(item, BaseException)]
        if errors:
            # A failed publish usually means a broken channel: start over on the next batch.
            logger.warning(
                "publishing failed",
                extra={"failed": len(errors), "batch": len(records), "error": repr(errors[0])},
            )
            await self.close()
        elif not all(delivered):
            logger.warning(
                "broker refused or returned messages",
                extra={"refused": delivered.count(False), "batch": len(records)},
            )
        return delivered

    async def _publish(
        self, exchange: AbstractExchange, record: OutboxRecord
    ) -> PublishResultType | None:
        # Each event continues the trace of the request that created it, stored on its row.
        with _tracer.start_as_current_span(
            "outbox relay",
            context=context_from_headers(record.headers),
            attributes={**RABBITMQ_SPAN_ATTRIBUTES, **_relay_span_attributes(record)},
        ):
            message = build_message(record)
            # Our span becomes the parent downstream (aio-pika's own publish span, when
            # instrumented, replaces it with a child of this one).
            message.headers.update(current_trace_headers())
            return await exchange.publish(
                message, ROUTING_KEY, mandatory=True, timeout=self._timeout
            )

    async def close(self) -> None:
        connection, self._connection, self._topology = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except (AMQPException, OSError, RuntimeError) as error:
                logger.debug("closing a broken connection", extra={"error": repr(error)})


class InProcessDispatcher:
    """The embedded mode's stand-in for RabbitMQ + consumer + Celery: processes each event in
    this process with the same function the Celery task runs."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        cache: OrderCache,
        delay_seconds: float = 0.0,
    ) -> None:
        self._session_factory = session_factory
        self._cache = cache
        self._delay = delay_seconds

    async def connect(self) -> None:
        return None

    async def deliver(self, records: Sequence[OutboxRecord]) -> list[bool]:
        # One after the other: the embedded database is SQLite, which has a single writer.
        return [await self._deliver_one(record) for record in records]

    async def _deliver_one(self, record: OutboxRecord) -> bool:
        with _tracer.start_as_current_span(
            "outbox relay in-process",
            context=context_from_headers(record.headers),
            attributes=_relay_span_attributes(record),
        ):
            return await self._process(record)

    async def _process(self, record: OutboxRecord) -> bool:
        try:
            event = OrderCreatedEvent.model_validate(record.payload)
        except ValidationError:
            # Without a broker there is no dead-letter queue: log it loudly (the row keeps the
            # payload until the retention purge) rather than retry something that cannot work.
            logger.exception(
                "dropping an outbox event that is not order.created v1",
                extra={"event_id": str(record.id)},
            )
            return True
        try:
            result = await process_order(
                self._session_factory, self._cache, event.order_id, delay_seconds=self._delay
            )
        except Exception:
            logger.exception("in-process order processing failed; the relay will retry")
            return False
        logger.info("order processed in-process", extra=result.as_dict())
        return True

    async def close(self) -> None:
        return None
