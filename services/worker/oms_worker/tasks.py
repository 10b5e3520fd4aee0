"""The worker's one task, `process_order_task`: process an order, retry, or park its event.

A failure is retried `ORDER_TASK_MAX_RETRIES` times, `ORDER_TASK_RETRY_DELAY_SECONDS` apart;
after the last one (or at once for an id that can never be valid) the order's event goes to
`new_order.dlq` (oms_worker.dead_letters), where `oms dlq list|replay` sees it.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any

from celery import Task

from oms.broker.celery_app import PROCESS_ORDER_TASK
from oms.processing.orders import describe_error, process_order
from oms_worker.app import app, runtimes, settings
from oms_worker.dead_letters import order_event_dead_letter, publish_dead_letter
from oms_worker.task_metrics import TASK_SECONDS, TASKS

logger = logging.getLogger("oms.worker")

TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
DEAD_LETTER_TIMEOUT_SECONDS = 10.0


def trace_context_of(request: Any) -> dict[str, str]:
    """Trace headers the consumer attached to the task message (W3C `traceparent`, ...)."""
    found = {name: getattr(request, name, None) for name in TRACE_HEADERS}
    return {name: value for name, value in found.items() if isinstance(value, str)}


def event_id_of(task_id: str | None) -> uuid.UUID:
    """The consumer sends each event with its event id as the task id."""
    try:
        return uuid.UUID(str(task_id))
    except ValueError:
        return uuid.uuid4()


def dead_letter(request: Any, order_id: str, reason: str) -> bool:
    """Park the order's event in `new_order.dlq` (confirmed) so that `oms dlq list|replay`
    sees it; False (logged) if that failed: the task then just fails."""
    url = settings.RABBITMQ_URL
    if not url:
        logger.error("cannot dead-letter without RABBITMQ_URL", extra={"order_id": order_id})
        return False
    letter = order_event_dead_letter(
        event_id_of(request.id), order_id, reason, trace_context_of(request)
    )
    try:
        publish_dead_letter(url, letter, DEAD_LETTER_TIMEOUT_SECONDS)
    except Exception:
        logger.exception("dead-lettering failed", extra={"order_id": order_id})
        return False
    logger.error(
        "processing failed for good; the event is in new_order.dlq (`oms dlq list`)",
        extra={"order_id": order_id, "event_id": letter.message_id, "reason": reason},
    )
    return True


@app.task(
    bind=True,
    name=PROCESS_ORDER_TASK,
    max_retries=settings.ORDER_TASK_MAX_RETRIES,
    default_retry_delay=math.ceil(settings.ORDER_TASK_RETRY_DELAY_SECONDS),
    acks_late=True,
    reject_on_worker_lost=True,
)
def process_order_task(self: Task[Any, Any], order_id: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        order_uuid = uuid.UUID(order_id)
    except ValueError as error:
        # A malformed id never becomes valid: no retry.
        parked = dead_letter(self.request, order_id, f"invalid order id: {error}")
        TASKS.labels("dead_lettered" if parked else "failed").inc()
        raise
    runtime = runtimes.current()
    try:
        result = runtime.run(
            process_order(
                runtime.session_factory,
                runtime.cache,
                order_uuid,
                delay_seconds=settings.ORDER_PROCESSING_DELAY_SECONDS,
            )
        )
    except Exception as error:
        retries = int(self.request.retries or 0)
        if retries >= settings.ORDER_TASK_MAX_RETRIES:
            logger.exception("processing failed for good", extra={"order_id": order_id})
            reason = f"processing failed after {retries + 1} attempts: {describe_error(error)}"
            parked = dead_letter(self.request, order_id, reason)
            TASKS.labels("dead_lettered" if parked else "failed").inc()
            raise
        TASKS.labels("retried").inc()
        logger.warning(
            "processing failed; retrying",
            extra={"order_id": order_id, "retry": retries + 1, "error": repr(error)},
        )
        raise self.retry(exc=error, countdown=settings.ORDER_TASK_RETRY_DELAY_SECONDS) from error
    finally:
        TASK_SECONDS.observe(time.perf_counter() - started)
    TASKS.labels(result.outcome).inc()
    logger.info(
        "order processed",
        extra={**result.as_dict(), "trace": trace_context_of(self.request)},
    )
    return result.as_dict()
