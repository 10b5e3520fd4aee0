"""Consumer metrics (the observability issue adds more; names follow Prometheus conventions)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "oms_consumer_messages_total",
    "new_order messages by outcome",
    ["outcome"],  # dispatched, dead_lettered, requeued
)
DISPATCH_SECONDS = Histogram(
    "oms_consumer_dispatch_duration_seconds",
    "Time to hand one task to Celery's broker, confirmation included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
IN_FLIGHT = Gauge("oms_consumer_in_flight_messages", "Messages received and not yet settled")
CONNECTED = Gauge("oms_consumer_connected", "1 while connected to RabbitMQ and consuming")
