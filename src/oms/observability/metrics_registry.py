"""Prometheus helpers shared by processes that fork (uvicorn workers, Celery prefork)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client import CollectorRegistry, Counter

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(prefix: str) -> Path:
    """Point prometheus_client at a fresh multiprocess directory, before it is imported.

    prometheus_client chooses its multiprocess value backend at import time, so this must run
    before anything imports it; files left by an earlier run are removed.
    """
    if "prometheus_client" in sys.modules and not os.environ.get(MULTIPROC_ENV):
        raise RuntimeError("prometheus_client was imported before the metrics dir was set")
    configured = os.environ.get(MULTIPROC_ENV)
    directory = Path(configured) if configured else Path(tempfile.mkdtemp(prefix=prefix))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def scrape_registry() -> CollectorRegistry:
    """The registry to expose: the aggregate of every process in multiprocess mode."""
    from prometheus_client import REGISTRY, multiprocess

    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def counter_from_zero(name: str, documentation: str, label: str, values: Iterable[str]) -> Counter:
    """A counter with one label whose known values exist from the start, at 0, so that rate()
    sees the first event instead of a series appearing with it."""
    from prometheus_client import Counter

    counter = Counter(name, documentation, [label])
    for value in values:
        counter.labels(value)
    return counter
