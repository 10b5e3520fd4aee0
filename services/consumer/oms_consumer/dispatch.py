"""Handing an event to Celery without blocking the event loop.

kombu publishes synchronously (and, with `confirm_publish`, waits for the broker's ack), so each
send runs in a small thread pool; the coroutine resumes once the broker has the task.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from celery import Celery
from opentelemetry.trace import SpanKind, get_current_span

from oms.backoff import exponential_delay
from oms.broker.celery_app import PROCESS_ORDER_TASK, TASK_QUEUE
from oms.broker.contracts import OrderCreatedEvent
from oms.observability.tracing import context_from_headers, current_trace_headers, tracer

logger = logging.getLogger("oms.consumer.dispatch")
_tracer = tracer("oms.consumer")

# Longest wait between two hand-off attempts (the first waits retry_delay_seconds).
MAX_RETRY_DELAY_SECONDS = 5.0


class DispatchError(RuntimeError):
    """Celery's broker did not accept the task after every attempt."""


class TaskDispatcher(Protocol):
    async def dispatch(self, event: OrderCreatedEvent, trace: dict[str, str]) -> None: ...

    def close(self) -> None: ...


class CeleryDispatcher:
    def __init__(
        self,
        app: Celery,
        *,
        attempts: int = 3,
        retry_delay_seconds: float = 0.5,
        threads: int = 8,
    ) -> None:
        self._app = app
        self._attempts = attempts
        self._retry_delay = retry_delay_seconds
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dispatch")
        # Build the producer pool once, here, rather than racing to build it in two threads.
        _ = app.producer_pool

    def _send(self, event: OrderCreatedEvent, trace: dict[str, str]) -> None:
        self._app.send_task(
            PROCESS_ORDER_TASK,
            args=[str(event.order_id)],
            # The event id as task id: a redelivered event maps to the same task and result key.
            task_id=str(event.event_id),
            headers=trace,
            retry=True,
            # The message's own flag overrides the worker's task_ignore_result, and send_task
            # sets it to False unless told: nobody reads a successful task's result.
            ignore_result=True,
        )

    async def dispatch(self, event: OrderCreatedEvent, trace: dict[str, str]) -> None:
        # Our own producer span: Celery's instrumentation cannot trace send_task of a task this
        # process does not register (it would leave its span open). Without tracing the
        # incoming context passes through unchanged.
        # The parent is aio-pika's receive span when it is instrumented, else the message's own
        # context: never a new root.
        current = get_current_span().get_span_context().is_valid
        with _tracer.start_as_current_span(
            f"{TASK_QUEUE} publish",
            context=None if current else context_from_headers(trace),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": TASK_QUEUE,
                "messaging.message.id": str(event.event_id),
                "celery.task_name": PROCESS_ORDER_TASK,
                "oms.order_id": str(event.order_id),
            },
        ):
            headers = {**trace, **current_trace_headers()}
            await self._dispatch(event, headers)

    async def _dispatch(self, event: OrderCreatedEvent, headers: dict[str, str]) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(1, self._attempts + 1):
            try:
                await loop.run_in_executor(self._executor, self._send, event, headers)
                return
            except Exception as error:
                logger.warning(
                    "Celery broker did not take the task",
                    extra={
                        "order_id": str(event.order_id),
                        "attempt": attempt,
                        "error": repr(error),
                    },
                )
                if attempt == self._attempts:
                    raise DispatchError(repr(error)) from error
                await asyncio.sleep(
                    exponential_delay(attempt, self._retry_delay, MAX_RETRY_DELAY_SECONDS)
                )

    def close(self) -> None:
        self._executor.shutdown(wait=True)
