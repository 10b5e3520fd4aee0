"""Reading prometheus_client multiprocess files one process at a time (public API only)."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess

DB_FILE = re.compile(r"^(?P<kind>[a-z_]+)_(?P<pid>\d+)\.db$")


def process_ids(directory: Path) -> set[int]:
    return {
        int(match["pid"]) for path in directory.iterdir() if (match := DB_FILE.match(path.name))
    }


def per_process_value(directory: Path, sample: str, labels: dict[str, str]) -> dict[int, float]:
    """One sample's value as each process wrote it: its files alone, aggregated by the
    collector prometheus_client itself uses."""
    files: dict[int, list[Path]] = defaultdict(list)
    for path in directory.iterdir():
        if match := DB_FILE.match(path.name):
            files[int(match["pid"])].append(path)
    values: dict[int, float] = {}
    for pid, paths in files.items():
        with tempfile.TemporaryDirectory(prefix=f"oms-mp-{pid}-") as alone:
            for path in paths:
                shutil.copy(path, alone)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=alone)  # type: ignore[no-untyped-call]
            for family in registry.collect():
                for item in family.samples:
                    if item.name == sample and item.labels == labels:
                        values[pid] = item.value
    return values
