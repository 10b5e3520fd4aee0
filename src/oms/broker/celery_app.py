"""The Celery configuration shared by the consumer (which only sends tasks) and the worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from celery import Celery

from oms.settings import BrokerSettings, CelerySettings

PROCESS_ORDER_TASK: Final = "oms.process_order_task"
TASK_QUEUE: Final = "order_tasks"


def broker_url(settings: BrokerSettings) -> str:
    url = settings.CELERY_BROKER_URL or settings.RABBITMQ_URL
    if not url:
        raise ValueError("RABBITMQ_URL (or CELERY_BROKER_URL) is required by the consumer/worker")
    return url


def create_celery_app(
    settings: CelerySettings, main: str = "oms", *, results: bool = True
) -> Celery:
    """`results=False` for processes that only send tasks (the consumer): with a result backend,
    Celery subscribes the sender to every task's result channel, a Redis round trip per task
    and a subscription that is never dropped."""
    app = Celery(
        main,
        broker=broker_url(settings),
        backend=settings.REDIS_URL_CELERY if results else None,
        set_as_current=False,
    )
    result_options = (
        {"global_keyprefix": settings.REDIS_KEY_PREFIX} if settings.REDIS_KEY_PREFIX else {}
    )
    app.conf.update(
        task_default_queue=TASK_QUEUE,
        task_routes={PROCESS_ORDER_TASK: {"queue": TASK_QUEUE}},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # A task message is acked when the task ends, not when it starts; a worker that dies
        # mid-task (even SIGKILL) leaves it unacked and the broker hands it to another worker.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # On a lost broker connection the unacked task comes back anyway: stop the running
        # copy instead of finishing it twice in parallel.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Block each publish until the broker confirmed it: the consumer acks its AMQP
        # message only after Celery's broker really has the task.
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        task_publish_retry=True,
        # Nobody reads a successful task's result (the order row says it all), and storing it
        # cost a Redis round trip per task (SETEX + PUBLISH on the result channel). Failures
        # are still stored, for whoever investigates them.
        task_ignore_result=True,
        task_store_errors_even_if_ignored=True,
        result_backend_transport_options=result_options,
        result_expires=timedelta(days=1),
        result_extended=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app
