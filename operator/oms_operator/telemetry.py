"""OpenTelemetry tracing for the operator: one span per reconcile and per queue poll.

Configured by the standard `OTEL_*` variables like every other service: spans are exported over
OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific endpoint) is set and the
SDK is not disabled; otherwise the no-op tracer costs nothing.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

SERVICE_NAME = "oms-operator"
tracer = trace.get_tracer("oms_operator")
_provider: TracerProvider | None = None


def exporting_enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing() -> bool:
    """Install the SDK provider when exporting is configured; True if it was installed."""
    global _provider
    if _provider is not None or not exporting_enabled():
        return _provider is not None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    service = os.environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)
    _provider = TracerProvider(resource=Resource.create({"service.name": service}))
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    return True


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.shutdown()
