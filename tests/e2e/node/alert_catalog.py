"""Which test makes each alert of observability/prometheus/*.rules.yaml fire for real: the failure
the alert is about, induced on a running system (a release on the node, or the embedded mode on
the host), the alert seen pending, then firing, then resolved once the failure is undone. The two
incidents on the node run side by side in tests/e2e/node/test_alerts.py.

tests/observability/test_alert_catalog.py (fast) fails when an alert of the rules is not in
this catalog, when its module does not exist, or when the module never names the alert; so a
new alert needs an induction test before it can be merged.

Plain data only: the fast tier imports this module without the node suite's dependencies.
"""

from __future__ import annotations

API_MODULE = "tests/e2e/node/incident_api.py"
EMBEDDED_MODULE = "tests/observability/test_alerts_embedded.py"
# Broker down, backlog, operator.
PIPELINE_MODULE = "tests/e2e/node/incident_pipeline.py"

INDUCED_BY: dict[str, str] = {
    # API and dead letters.
    "OmsApiHighErrorRate": API_MODULE,
    "OmsApiErrorBudgetBurnFast": API_MODULE,
    "OmsApiErrorBudgetBurnSlow": API_MODULE,
    "OmsApiLatencyBudgetBurnFast": API_MODULE,
    "OmsApiLatencyBudgetBurnSlow": API_MODULE,
    "OmsDeadLetterQueueNotEmpty": API_MODULE,
    "OmsWorkerTasksFailing": API_MODULE,
    "OmsServiceDown": API_MODULE,
    # A PostgreSQL outage: the pods fail their readiness probe and leave the Service.
    "OmsApiNotReady": API_MODULE,
    # The embedded mode (no RabbitMQ) is the only place outbox events are parked.
    "OmsOutboxEventsParked": EMBEDDED_MODULE,
    # Broker down, backlog, operator.
    "OmsOutboxBacklogStale": PIPELINE_MODULE,
    "OmsConsumerDisconnected": PIPELINE_MODULE,
    "OmsWorkerQueueUnreadable": PIPELINE_MODULE,
    "OmsQueueDepthGrowing": PIPELINE_MODULE,
    "OmsOrderProcessingLagHigh": PIPELINE_MODULE,
    "OmsWorkersScalingStuckAtMax": PIPELINE_MODULE,
    "OmsJwtKeyRotationOverdue": PIPELINE_MODULE,
    "OmsOperatorReconcileErrors": PIPELINE_MODULE,
}
