"""OpenTelemetry tracing, configured only by the standard `OTEL_*` environment variables.

Nothing is exported unless an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_TRACES_EXPORTER` is not `none`. W3C trace
context travels with each order: stored on the outbox row, sent in AMQP headers, handed to the
Celery task, so one trace covers `POST /orders/` to the worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_provider: TracerProvider | None = None


def tracing_configured() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(service_name: str) -> bool:
    """Install an OTLP-exporting tracer provider once per process; False when not configured."""
    global _provider
    if _provider is not None:
        return True
    if not tracing_configured():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    _provider = TracerProvider(resource=Resource.create(attributes))
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    return True


def tracing_active() -> bool:
    """Whether this process exports spans (configure_tracing succeeded here)."""
    return _provider is not None


def instrument_aio_pika() -> None:
    """Trace aio-pika publishes and consumer callbacks, propagating context in AMQP headers."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor

    instrumentor = AioPikaInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=_provider)


def shutdown_tracing() -> None:
    """Flush buffered spans (call on process exit)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def reset_after_fork() -> None:
    """A forked child must not reuse the parent's exporter thread: start afresh."""
    global _provider
    _provider = None


def current_trace_headers() -> dict[str, str]:
    """The current trace context as W3C headers (`traceparent`, `tracestate`)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from_headers(headers: Mapping[str, object] | None) -> context.Context:
    carrier = {
        str(key): value.decode() if isinstance(value, bytes) else str(value)
        for key, value in (headers or {}).items()
        if key in ("traceparent", "tracestate", "baggage")
    }
    return propagate.extract(carrier)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
