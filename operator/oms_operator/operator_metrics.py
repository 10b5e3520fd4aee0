"""Prometheus metrics of the operator, served on /metrics (port 9103 by default)."""

from __future__ import annotations

import contextlib

from prometheus_client import REGISTRY, Counter, Gauge

from oms.observability.probe_server import MetricsServer

_LABELS = ("namespace", "ordersystem")

QUEUE_DEPTH = Gauge(
    "oms_operator_queue_depth",
    "Messages in a watched worker queue at the last successful poll (ready or unacked).",
    [*_LABELS, "queue", "state"],
)
DESIRED_REPLICAS = Gauge(
    "oms_operator_desired_replicas", "Worker replicas the scaling plan asked for.", _LABELS
)
CURRENT_REPLICAS = Gauge(
    "oms_operator_current_replicas", "Worker replicas the Deployment is set to.", _LABELS
)
REQUIRED_REPLICAS = Gauge(
    "oms_operator_required_replicas",
    "Replicas the backlog asks for before the min/max bounds (ceil(depth / per replica)).",
    _LABELS,
)
MAX_REPLICAS = Gauge("oms_operator_max_replicas", "The configured maxReplicas.", _LABELS)
SCALE_EVENTS = Counter(
    "oms_operator_scale_events_total",
    "Changes of the worker replicas made by the operator.",
    [*_LABELS, "direction"],
)
RECONCILE_ERRORS = Counter(
    "oms_operator_reconcile_errors_total",
    "Failed reconcile steps (keys, queue poll, scaling, status).",
    [*_LABELS, "stage"],
)
KEY_ROTATIONS = Counter(
    "oms_operator_key_rotations_total",
    "Key Secret writes that changed keys (created, repaired, staged, promoted, pruned).",
    [*_LABELS, "action"],
)
LAST_SUCCESSFUL_POLL = Gauge(
    "oms_operator_last_successful_poll_timestamp_seconds",
    "Unix time of the last poll that read every watched queue.",
    _LABELS,
)
QUEUE_READABLE = Gauge(
    "oms_operator_queue_readable", "1 when the last poll read every watched queue, else 0.", _LABELS
)
KEY_ROTATION_DUE = Gauge(
    "oms_operator_key_rotation_due_timestamp_seconds",
    "Unix time at which the signing key is due to be replaced.",
    _LABELS,
)
KEY_ACTIVE_SINCE = Gauge(
    "oms_operator_key_active_since_timestamp_seconds",
    "Unix time since which the current key signs tokens.",
    _LABELS,
)

_PER_OBJECT = (
    DESIRED_REPLICAS,
    CURRENT_REPLICAS,
    REQUIRED_REPLICAS,
    MAX_REPLICAS,
    LAST_SUCCESSFUL_POLL,
    QUEUE_READABLE,
    KEY_ROTATION_DUE,
    KEY_ACTIVE_SINCE,
)


def forget(namespace: str, name: str) -> None:
    """Drop the gauges of a deleted OrderSystem so dashboards do not show a ghost."""
    for gauge in _PER_OBJECT:
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
    # prometheus-client has no public way to list label sets; `_metrics` is stable since 0.4.
    for labels in list(QUEUE_DEPTH._metrics):
        if labels[:2] == (namespace, name):
            QUEUE_DEPTH.remove(*labels)


def serve(host: str, port: int) -> MetricsServer:
    """`/metrics` on its own port, from the bounded server the services use: a read waits
    only so long and connections beyond a bound are refused, so idle clients cannot pile up
    a thread each (prometheus_client's own server has neither bound)."""
    return MetricsServer(host, port, REGISTRY).start()
