"""Worker metrics. Prefork children count their own tasks, so the values live in
prometheus_client's multiprocess files (PROMETHEUS_MULTIPROC_DIR, prepared by oms_worker.main
before this module is imported) and the scrape endpoint aggregates them
(`oms.observability.metrics_registry.scrape_registry`). The end-to-end lag histogram
(`oms_order_processing_lag_seconds`) is recorded by the shared processing function."""

from __future__ import annotations

import os

from prometheus_client import Histogram, multiprocess

from oms.observability.metrics_registry import MULTIPROC_ENV, counter_from_zero

TASKS = counter_from_zero(
    "oms_worker_tasks_total",
    "process_order_task runs by outcome",
    "outcome",
    # processed (success), already_processed (duplicate delivery), retried, dead_lettered
    # (failed for good, parked in new_order.dlq), failed (for good, and dead-lettering failed)
    ("processed", "already_processed", "retried", "dead_lettered", "failed"),
)
TASK_SECONDS = Histogram(
    "oms_worker_task_duration_seconds",
    "Time spent in process_order_task",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def forget_process(pid: int) -> None:
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
