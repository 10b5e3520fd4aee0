"""Worker metrics. Prefork children count their own tasks, so the values live in
prometheus_client's multiprocess files (PROMETHEUS_MULTIPROC_DIR, prepared by oms_worker.main
before this module is imported) and the scrape endpoint aggregates them."""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess

TASKS = Counter(
    "oms_worker_tasks_total",
    "process_order_task runs by outcome",
    ["outcome"],  # processed, already_processed, retried, failed
)
TASK_SECONDS = Histogram(
    "oms_worker_task_duration_seconds",
    "Time spent in process_order_task",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def scrape_registry() -> CollectorRegistry:
    """The registry to expose: aggregated over all processes when in multiprocess mode."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def forget_process(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
