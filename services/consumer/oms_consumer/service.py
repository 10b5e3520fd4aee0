"""The `new_order` consumer: parse, hand to Celery, then ack.

Settling rules (at-least-once, never an endless loop):
- parsed and accepted by Celery's broker (publisher-confirmed) -> ack;
- unparseable -> republished to `new_order.dlq` with the reason in the
  `x-oms-dead-letter-reason` header (confirmed), then acked;
- Celery's broker refused every attempt -> nack with requeue; the quorum queue counts the
  delivery and after DELIVERY_LIMIT deliveries dead-letters the message itself
  (`x-first-death-reason: delivery_limit`). A consumer crashing on a message counts the same way.

The connection is aio-pika's robust one: after a broker restart it reconnects, redeclares the
topology and resumes consuming. SIGTERM: cancel the subscription, let in-flight messages finish
(bounded by CONSUMER_SHUTDOWN_TIMEOUT_SECONDS), then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika import Message
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import AMQPException

from oms.backoff import exponential_delay
from oms.broker.contracts import DEAD_LETTER_QUEUE_NAME, DEAD_LETTER_REASON_HEADER
from oms.broker.messages import (
    UnparseableMessageError,
    parse_order_event,
    persistent_copy,
    trace_context,
)
from oms.broker.topology import Topology, declare_topology
from oms.observability.pipeline_metrics import seconds_between
from oms.settings import ConsumerSettings
from oms_consumer.consumer_metrics import (
    CONNECTED,
    DEAD_LETTERED,
    DISPATCH_LAG,
    DISPATCH_SECONDS,
    IN_FLIGHT,
    MESSAGES,
    RECEIVED,
    REDELIVERED,
)
from oms_consumer.dispatch import DispatchError, TaskDispatcher

logger = logging.getLogger("oms.consumer")

BROKER_CALL_TIMEOUT_SECONDS = 5.0
# First wait after a failed connect; doubles up to 5 x CONSUMER_RECONNECT_SECONDS.
CONNECT_BACKOFF_SECONDS = 0.2


def dead_letter_message(message: AbstractIncomingMessage, reason: str) -> Message:
    headers: dict[str, Any] = dict(message.headers or {})
    headers[DEAD_LETTER_REASON_HEADER] = reason[:500]
    return persistent_copy(message, headers)


class OrderEventConsumer:
    def __init__(self, settings: ConsumerSettings, dispatcher: TaskDispatcher) -> None:
        if not settings.RABBITMQ_URL:
            raise ValueError("the consumer needs RABBITMQ_URL")
        self._url = settings.RABBITMQ_URL
        self._settings = settings
        self._dispatcher = dispatcher
        self._connection: AbstractRobustConnection | None = None
        self._topology: Topology | None = None
        self._consumer_tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    @property
    def connection(self) -> AbstractRobustConnection | None:
        return self._connection

    # --- health -------------------------------------------------------------------------------
    def checks(self) -> dict[str, bool]:
        """Readiness: connected and subscribed. Called from the probe thread: reads only."""
        connection = self._connection
        connected = connection is not None and not connection.is_closed
        return {
            "rabbitmq": connected,
            "consuming": self._consumer_tag is not None,
            "not_shutting_down": not self._stopping.is_set(),
        }

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> bool:
        """Connect (retrying with back-off) and subscribe; False if stopped before connecting."""
        failures = 0
        while not self._stopping.is_set():
            try:
                self._connection = await aio_pika.connect_robust(
                    self._url,
                    reconnect_interval=self._settings.CONSUMER_RECONNECT_SECONDS,
                    timeout=10,
                )
                break
            except (AMQPException, OSError, TimeoutError) as error:
                failures += 1
                delay = exponential_delay(
                    failures, CONNECT_BACKOFF_SECONDS, self._settings.CONSUMER_RECONNECT_SECONDS * 5
                )
                logger.warning(
                    "RabbitMQ unreachable; retrying",
                    extra={"error": repr(error), "retry_in": delay},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        if self._connection is None:
            return False
        self._connection.reconnect_callbacks.add(self._on_reconnect)
        self._connection.close_callbacks.add(self._on_close)
        channel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=self._settings.CONSUMER_PREFETCH)
        self._topology = await declare_topology(channel)
        self._consumer_tag = await self._topology.queue.consume(self._on_message)
        CONNECTED.set(1)
        logger.info(
            "consuming",
            extra={
                "queue": self._topology.queue.name,
                "prefetch": self._settings.CONSUMER_PREFETCH,
            },
        )
        return True

    async def stop(self) -> None:
        self._stopping.set()
        if self._topology is not None and self._consumer_tag is not None:
            try:
                # Bounded: during a broker outage the robust channel would wait to reconnect.
                await asyncio.wait_for(
                    self._topology.queue.cancel(self._consumer_tag), BROKER_CALL_TIMEOUT_SECONDS
                )
            except (AMQPException, OSError, RuntimeError, TimeoutError) as error:
                logger.warning("could not cancel the subscription", extra={"error": repr(error)})
            self._consumer_tag = None
        if self._in_flight:
            _done, pending = await asyncio.wait(
                set(self._in_flight), timeout=self._settings.CONSUMER_SHUTDOWN_TIMEOUT_SECONDS
            )
            if pending:
                # Unacked: the broker redelivers them to another consumer.
                logger.warning("shutdown grace ran out", extra={"abandoned": len(pending)})
                for task in pending:
                    task.cancel()
        if self._connection is not None:
            with contextlib.suppress(AMQPException, OSError, RuntimeError, TimeoutError):
                await asyncio.wait_for(self._connection.close(), BROKER_CALL_TIMEOUT_SECONDS)
        CONNECTED.set(0)
        self._dispatcher.close()

    def _on_reconnect(self, *_: Any) -> None:
        CONNECTED.set(1)
        logger.info("reconnected to RabbitMQ")

    def _on_close(self, *_: Any) -> None:
        CONNECTED.set(0)
        if not self._stopping.is_set():
            logger.warning("lost the RabbitMQ connection; reconnecting")

    # --- messages -----------------------------------------------------------------------------
    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self.handle(message))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        RECEIVED.inc()
        if message.redelivered:
            REDELIVERED.inc()
        IN_FLIGHT.inc()
        try:
            await self._handle(message)
        finally:
            IN_FLIGHT.dec()

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            event = parse_order_event(message.body, message.content_type)
        except UnparseableMessageError as error:
            await self._dead_letter(message, str(error), error.reason)
            return
        started = time.perf_counter()
        try:
            await self._dispatcher.dispatch(event, trace_context(message.headers))
        except DispatchError as error:
            MESSAGES.labels("requeued").inc()
            logger.warning(
                "could not hand the order to Celery; requeued",
                extra={"order_id": str(event.order_id), "error": str(error)},
            )
            await self._settle(message.nack(requeue=True))
            return
        DISPATCH_SECONDS.observe(time.perf_counter() - started)
        DISPATCH_LAG.observe(seconds_between(event.occurred_at, datetime.now(UTC)))
        if await self._settle(message.ack()):
            MESSAGES.labels("dispatched").inc()

    async def _dead_letter(
        self, message: AbstractIncomingMessage, reason: str, reason_label: str
    ) -> None:
        assert self._topology is not None
        logger.error(
            "dead-lettering an unusable message",
            extra={"message_id": message.message_id, "reason": reason},
        )
        try:
            await self._topology.dead_letter_exchange.publish(
                dead_letter_message(message, reason), DEAD_LETTER_QUEUE_NAME
            )
        except (AMQPException, OSError, RuntimeError, TimeoutError) as error:
            logger.warning("dead-lettering failed; requeued", extra={"error": repr(error)})
            await self._settle(message.nack(requeue=True))
            return
        if await self._settle(message.ack()):
            MESSAGES.labels("dead_lettered").inc()
            DEAD_LETTERED.labels(reason_label).inc()

    async def _settle(self, settlement: Awaitable[None]) -> bool:
        """Ack/nack; on a dead channel the broker has already requeued the message."""
        try:
            await settlement
        except (AMQPException, OSError, RuntimeError) as error:
            logger.warning("could not settle a message", extra={"error": repr(error)})
            return False
        return True
