"""Consumer metrics, served on CONSUMER_METRICS_PORT (9101) at /metrics.

Every delivery counts once in `received`; how it was settled counts in `messages_total{outcome}`
(`dispatched` and `dead_lettered` are acks, `requeued` a nack). The queue gauges come from a
periodic passive declare (see oms_consumer.queue_depth_poller), so every consumer replica
reports the same broker-wide values: aggregate them with `max`, not `sum`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from oms.observability.metrics_registry import counter_from_zero

RECEIVED = Counter("oms_consumer_messages_received_total", "new_order deliveries received")
REDELIVERED = Counter(
    "oms_consumer_messages_redelivered_total",
    "Deliveries flagged as redelivered by the broker (an earlier delivery was not acked)",
)
MESSAGES = counter_from_zero(
    "oms_consumer_messages_total",
    "new_order messages by how they were settled",
    "outcome",
    ("dispatched", "dead_lettered", "requeued"),  # acked, acked, nacked
)
DEAD_LETTERED = counter_from_zero(
    "oms_consumer_dead_lettered_messages_total",
    "Messages the consumer moved to new_order.dlq, by reason",
    "reason",
    ("content_type", "invalid_event"),
)
DISPATCH_SECONDS = Histogram(
    "oms_consumer_dispatch_duration_seconds",
    "Time to hand one task to Celery's broker, confirmation included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DISPATCH_LAG = Histogram(
    "oms_consumer_dispatch_lag_seconds",
    "Time from the event's occurred_at (order committed) to its task being accepted by Celery",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
IN_FLIGHT = Gauge("oms_consumer_in_flight_messages", "Messages received and not yet settled")
CONNECTED = Gauge("oms_consumer_connected", "1 while connected to RabbitMQ and consuming")
QUEUE_MESSAGES = Gauge(
    "oms_queue_messages",
    "Ready messages in a RabbitMQ queue at the last poll (unacked ones are not included)",
    ["queue"],
)
QUEUE_CONSUMERS = Gauge(
    "oms_queue_consumers", "Consumers subscribed to a RabbitMQ queue at the last poll", ["queue"]
)
QUEUE_POLL_TIMESTAMP = Gauge(
    "oms_queue_last_poll_timestamp_seconds", "Unix time of the last successful queue poll"
)
