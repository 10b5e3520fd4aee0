"""The Celery application of the worker and its one task, `process_order_task`.

`celery -A oms_worker.app worker` works as well as `oms-worker` (which adds the probe/metrics
port and the prometheus multiprocess set-up).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from typing import Any

from celery import Celery, Task
from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutting_down,
)

from oms.pipeline.celery_config import PROCESS_ORDER_TASK, create_celery_app
from oms.pipeline.destinations import describe_error
from oms.pipeline.dlq import order_event_dead_letter, publish_dead_letter
from oms.pipeline.processing import process_order
from oms.settings import WorkerSettings, get_worker_settings
from oms.telemetry import configure_tracing, reset_after_fork, shutdown_tracing
from oms_worker.metrics import TASK_SECONDS, TASKS, forget_process
from oms_worker.runtime import RuntimeHolder

logger = logging.getLogger("oms.worker")

TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
DEAD_LETTER_TIMEOUT_SECONDS = 10.0


class WorkerStatus:
    """What the main process knows about itself, read by the readiness probe's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False
        self._stopping = False

    def mark_ready(self) -> None:
        with self._lock:
            self._ready = True

    def mark_stopping(self) -> None:
        with self._lock:
            self._stopping = True

    def checks(self) -> dict[str, bool]:
        with self._lock:
            return {"consuming": self._ready, "not_shutting_down": not self._stopping}


def trace_context_of(request: Any) -> dict[str, str]:
    """Trace headers the consumer attached to the task message (W3C `traceparent`, ...)."""
    found = {name: getattr(request, name, None) for name in TRACE_HEADERS}
    return {name: value for name, value in found.items() if isinstance(value, str)}


def instrument_worker_child() -> None:
    """Celery task spans continue the trace in the task message headers; redis and SQLAlchemy
    calls (engines are instrumented where they are created, see oms_worker.runtime) nest."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    celery_instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    for instrumentor in (celery_instrumentor, RedisInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def event_id_of(task_id: str | None) -> uuid.UUID:
    """The consumer sends each event with its event id as the task id."""
    try:
        return uuid.UUID(str(task_id))
    except ValueError:
        return uuid.uuid4()


def create_worker_app(settings: WorkerSettings) -> tuple[Celery, WorkerStatus]:
    app = create_celery_app(settings, main="oms_worker")
    runtimes = RuntimeHolder(settings)
    status = WorkerStatus()

    def dead_letter(request: Any, order_id: str, reason: str) -> bool:
        """Park the order's event in `new_order.dlq` (confirmed) so that `oms dlq list|replay`
        sees it; False (logged) if that failed: the task then just fails, as it did before."""
        url = settings.RABBITMQ_URL
        if not url:
            logger.error("cannot dead-letter without RABBITMQ_URL", extra={"order_id": order_id})
            return False
        message = order_event_dead_letter(
            event_id_of(request.id), order_id, reason, trace_context_of(request)
        )
        try:
            runtimes.current().run(publish_dead_letter(url, message, DEAD_LETTER_TIMEOUT_SECONDS))
        except Exception:
            logger.exception("dead-lettering failed", extra={"order_id": order_id})
            return False
        logger.error(
            "processing failed for good; the event is in new_order.dlq (`oms dlq list`)",
            extra={"order_id": order_id, "event_id": message.message_id, "reason": reason},
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
            raise self.retry(
                exc=error, countdown=settings.ORDER_TASK_RETRY_DELAY_SECONDS
            ) from error
        finally:
            TASK_SECONDS.observe(time.perf_counter() - started)
        TASKS.labels(result.outcome).inc()
        logger.info(
            "order processed",
            extra={**result.as_dict(), "trace": trace_context_of(self.request)},
        )
        return result.as_dict()

    def open_child(**_: Any) -> None:
        # The tracer provider and its export thread must be born in the child, after the fork.
        reset_after_fork()
        if configure_tracing("oms-worker"):
            instrument_worker_child()
        runtimes.current()

    def close_child(**_: Any) -> None:
        runtimes.close()
        forget_process(os.getpid())
        # Children leave with os._exit: flush their spans explicitly.
        shutdown_tracing()

    def ready(**_: Any) -> None:
        status.mark_ready()

    def stopping(**_: Any) -> None:
        status.mark_stopping()

    worker_process_init.connect(open_child, weak=False)
    worker_process_shutdown.connect(close_child, weak=False)
    worker_ready.connect(ready, weak=False)
    worker_shutting_down.connect(stopping, weak=False)
    return app, status


app, status = create_worker_app(get_worker_settings())
