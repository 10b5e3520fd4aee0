"""The worker's Celery application: configuration, per-process resources and their signals.

Celery's usual layout: this module makes the app (`celery -A oms_worker.app worker` works as
well as `oms-worker`, which adds the probe/metrics port and the prometheus multiprocess set-up),
`oms_worker.tasks` holds the task, `process_order_task`, and is loaded through `include`.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from celery import signals

from oms.broker.celery_app import create_celery_app
from oms.observability.tracing import configure_tracing, reset_after_fork, shutdown_tracing
from oms.settings import get_worker_settings
from oms_worker.runtime import RuntimeHolder
from oms_worker.task_metrics import forget_process


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


def instrument_worker_child() -> None:
    """Celery task spans continue the trace in the task message headers; redis and SQLAlchemy
    calls (engines are instrumented where they are created, see oms_worker.runtime) nest."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    celery_instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    for instrumentor in (celery_instrumentor, RedisInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


settings = get_worker_settings()
app = create_celery_app(settings, main="oms_worker")
app.conf.include = ["oms_worker.tasks"]
runtimes = RuntimeHolder(settings)
status = WorkerStatus()


@signals.worker_process_init.connect(weak=False)
def open_child(**_: Any) -> None:
    # The tracer provider and its export thread must be born in the child, after the fork.
    reset_after_fork()
    if configure_tracing("oms-worker"):
        instrument_worker_child()
    runtimes.current()


@signals.worker_process_shutdown.connect(weak=False)
def close_child(**_: Any) -> None:
    runtimes.close()
    forget_process(os.getpid())
    # Children leave with os._exit: flush their spans explicitly.
    shutdown_tracing()


@signals.worker_ready.connect(weak=False)
def ready(**_: Any) -> None:
    status.mark_ready()


@signals.worker_shutting_down.connect(weak=False)
def stopping(**_: Any) -> None:
    status.mark_stopping()
