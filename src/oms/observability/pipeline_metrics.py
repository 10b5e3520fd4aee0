"""Prometheus metrics of the pipeline code shared by several services.

The outbox relay runs inside the API (or `oms-relay`); order processing runs in the Celery worker
or, in embedded mode, in the API. Processes that fork (uvicorn workers, Celery prefork children)
must point prometheus_client at a multiprocess directory before this module is imported (see
`oms.observability.metrics_registry.prepare_multiprocess_dir`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

OUTBOX_PUBLISH_SECONDS = Histogram(
    "oms_outbox_publish_duration_seconds",
    "Time to hand one claimed outbox batch to its destination, broker confirms included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_EVENTS_PUBLISHED = Counter(
    "oms_outbox_events_published_total", "Outbox events the destination confirmed"
)
OUTBOX_EVENTS_FAILED = Counter(
    "oms_outbox_events_failed_total",
    "Outbox events handed over but not confirmed (refused, returned, publish or processing "
    "error); retried",
)
OUTBOX_EVENTS_PARKED = Counter(
    "oms_outbox_events_parked",
    "Outbox events parked after their last allowed processing attempt (embedded mode)",
)
OUTBOX_PARKED = Gauge(
    "oms_outbox_parked_events",
    "Parked outbox events waiting for `oms dlq replay` (embedded mode; refreshed by the relay)",
    # Every relay reads the same table: the latest reading is the right one.
    multiprocess_mode="mostrecent",
)
OUTBOX_RELAY_FAILURES = Counter(
    "oms_outbox_relay_failures_total",
    "Relay iterations that failed (destination or database unavailable) and backed off",
)
ORDER_PROCESSING_LAG = Histogram(
    "oms_order_processing_lag_seconds",
    "Time from an order's creation to its first successful processing (end-to-end lag)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)


def seconds_between(earlier: datetime, later: datetime) -> float:
    """Elapsed seconds, reading naive datetimes as UTC (SQLite may hand them back naive)."""
    if earlier.tzinfo is None:
        earlier = earlier.replace(tzinfo=UTC)
    if later.tzinfo is None:
        later = later.replace(tzinfo=UTC)
    return max(0.0, (later - earlier).total_seconds())
