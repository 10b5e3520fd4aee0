"""`oms-worker`: the Celery worker (prefork) plus its probe/metrics HTTP port.

SIGTERM is Celery's warm shutdown: stop taking tasks, finish the running ones, exit.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from oms.logging import configure_logging
from oms.pipeline.celery_config import TASK_QUEUE
from oms.settings import get_settings


def prepare_metrics_dir() -> Path:
    """prometheus_client picks its multiprocess mode when first imported, so the directory
    must be known before anything imports it; stale files of an earlier run are removed."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics dir was set")
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="oms-worker-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


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
    settings = get_settings()
    configure_logging("worker", settings.LOG_LEVEL)
    prepare_metrics_dir()
    # Imported only now: they import prometheus_client (see prepare_metrics_dir).
    from oms.pipeline.probes import ProbeServer
    from oms_worker.app import app, status
    from oms_worker.metrics import scrape_registry

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
