"""The documented command: `oms-operator` as a process, JSON logs, probes, clean SIGTERM; and
the traces each reconcile leaves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from oms.observability.tracing import tracing_configured
from tests.harness import free_port
from tests.infra import RABBITMQ_URL
from tests.operator.cluster import Cluster, eventually
from tests.operator.conftest import OperatorFactory, ordersystem_spec
from tests.operator.observe import condition

pytestmark = pytest.mark.slow


async def test_oms_operator_command_runs_probes_and_stops_on_sigterm(
    cluster: Cluster, rabbit_queue: str, tmp_path: Path
) -> None:
    await cluster.create_secret("oms-rabbitmq", {"RABBITMQ_URL": RABBITMQ_URL})
    await cluster.create_deployment("oms-worker", 1)
    await cluster.create_ordersystem("oms", ordersystem_spec(rabbit_queue))
    liveness, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "OPERATOR_NAMESPACES": cluster.namespace,
        "OPERATOR_LIVENESS_HOST": "127.0.0.1",
        "OPERATOR_LIVENESS_PORT": str(liveness),
        "OPERATOR_METRICS_HOST": "127.0.0.1",
        "OPERATOR_METRICS_PORT": str(metrics_port),
    }
    command = Path(sys.executable).parent / "oms-operator"
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(command), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
        )
        try:

            async def ready() -> bool:
                found = condition(await cluster.ordersystem("oms"), "Ready")
                return bool(found and found["status"] == "True")

            try:
                await eventually(ready, timeout=90)  # a cold interpreter on a busy CI box
            except AssertionError as error:
                raise AssertionError(f"{error}\n{log_path.read_text()[-3000:]}") from error
            async with httpx.AsyncClient() as http:
                health = await http.get(f"http://127.0.0.1:{liveness}/healthz", timeout=5)
                scraped = await http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
            assert health.status_code == 200
            assert health.json()["ordersystems"] == 1
            assert "oms_operator_desired_replicas{" in scraped.text
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert any(
        record.get("service") == "operator" and record.get("ordersystem") == "oms"
        for record in records
    ), log_path.read_text()[-2000:]


async def test_each_reconcile_and_poll_is_a_span(
    cluster: Cluster, run_operator: OperatorFactory, rabbit_queue: str
) -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    try:
        await cluster.create_secret("oms-rabbitmq", {"RABBITMQ_URL": RABBITMQ_URL})
        await cluster.create_deployment("oms-worker", 1)
        await cluster.create_ordersystem("oms", ordersystem_spec(rabbit_queue))
        async with run_operator():

            async def traced() -> bool:
                names = {
                    span.name
                    for span in exporter.get_finished_spans()
                    if (span.attributes or {}).get("k8s.namespace.name") == cluster.namespace
                }
                return {"ordersystem.reconcile", "ordersystem.poll_queue"} <= names

            await eventually(traced)
    finally:
        processor.shutdown()
    polls = [
        span
        for span in exporter.get_finished_spans()
        if span.name == "ordersystem.poll_queue"
        and (span.attributes or {}).get("k8s.namespace.name") == cluster.namespace
    ]
    reconcile_ids = {
        span.context.span_id
        for span in exporter.get_finished_spans()
        if span.name == "ordersystem.reconcile"
    }
    assert polls[0].parent is not None
    assert polls[0].parent.span_id in reconcile_ids  # the poll is a child of its reconcile
    assert (polls[0].attributes or {})["messaging.destination.name"] == rabbit_queue


def test_spans_are_exported_only_when_an_endpoint_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert not tracing_configured()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing_configured()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not tracing_configured()
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing_configured()
