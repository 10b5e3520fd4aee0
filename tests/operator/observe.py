"""Reading what the operator reports: status conditions and Prometheus samples. Shared by the
tests on kmock (tests/operator) and on the real API server (tests/cluster)."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def condition(ordersystem: dict[str, Any], condition_type: str) -> dict[str, Any] | None:
    for item in (ordersystem.get("status") or {}).get("conditions") or []:
        if item.get("type") == condition_type:
            return dict(item)
    return None


def scrape(port: int) -> Samples:
    """Every sample of the operator's /metrics, keyed by name and sorted labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            samples[(found.name, tuple(sorted(found.labels.items())))] = found.value
    return samples


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))
