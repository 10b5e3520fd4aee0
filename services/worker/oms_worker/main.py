"""`oms-worker`: the Celery worker (prefork) plus its probe/metrics HTTP port.

SIGTERM is Celery's warm shutdown: stop taking tasks, finish the running ones, exit.
"""

from __future__ import annotations

import os
import sys

from oms.broker.celery_app import TASK_QUEUE
from oms.observability.logs import configure_logging
from oms.observability.metrics_registry import prepare_multiprocess_dir
from oms.settings import get_worker_settings


def worker_argv(concurrency: int, log_level: str, extra: list[str]) -> list[str]:
    return [
        "worker",
        f"--concurrency={concurrency}",
        "--pool=prefork",
        f"--queues={TASK_QUEUE}",
        f"--loglevel={log_level}",
        f"--hostname=oms-worker-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        *extra,
    ]


def main(argv: list[str] | None = None) -> None:
    settings = get_worker_settings()
    configure_logging("worker", settings.LOG_LEVEL)
    # Prefork children count in files that the main process aggregates at scrape time.
    prepare_multiprocess_dir("oms-worker-")
    # Imported only now: they import prometheus_client (see prepare_multiprocess_dir).
    from oms.observability.metrics_registry import scrape_registry
    from oms.observability.probe_server import ProbeServer
    from oms_worker.app import app, status

    probes = ProbeServer(
        settings.HOST, settings.WORKER_METRICS_PORT, status.checks, scrape_registry()
    ).start()
    try:
        app.worker_main(
            worker_argv(
                settings.WORKER_CONCURRENCY,
                settings.LOG_LEVEL,
                list(sys.argv[1:] if argv is None else argv),
            )
        )
    finally:
        probes.stop()


if __name__ == "__main__":
    main()
