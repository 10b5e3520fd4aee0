"""One trace from `POST /orders/` to the Celery task, across three real processes.

The API, consumer and worker run as processes (prefork worker with two children) exporting
OTLP/HTTP to a receiver in this test; the trace context travels in the outbox row, the AMQP
headers and the Celery task headers.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import StackFactory
from tests.e2e.helpers import processed_over_http
from tests.observability.otlp import OtlpReceiver, ReceivedSpan
from tests.pipeline.support import ORDER_BODY, eventually, register_and_login

pytestmark = pytest.mark.e2e

# From the worker's processing span up to the request: the hops (`service:kind:name`, as a
# ReceivedSpan prints) that must appear, in this order (instrumentation may add hops in between).
EXPECTED_HOPS = [
    "oms-worker:internal:process order",
    "oms-worker:consumer:run/oms.process_order_task",
    "oms-consumer:producer:order_tasks publish",
    "oms-consumer:consumer:orders receive",
    "oms-api:producer:orders,order.created send",
    "oms-api:internal:outbox relay",
    "oms-api:server:POST /orders/",
]


class BrokenTraceError(AssertionError):
    pass


def ancestry(span: ReceivedSpan, spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """The span and its ancestors up to the root; fails if a parent was never received."""
    by_id = {item.span_id: item for item in spans}
    chain = [span]
    while chain[-1].parent_id is not None:
        parent = by_id.get(chain[-1].parent_id)
        if parent is None:
            raise BrokenTraceError(f"parent of {chain[-1]} missing; chain so far {chain}")
        if parent.trace_id != span.trace_id:
            raise BrokenTraceError(f"{parent} belongs to another trace")
        chain.append(parent)
    return chain


def hops_in_order(chain: list[ReceivedSpan]) -> list[str]:
    """The expected hops found walking the chain, keeping only those in EXPECTED_HOPS order."""
    found: list[str] = []
    wanted = iter(EXPECTED_HOPS)
    target = next(wanted, None)
    for span in chain:
        if target is not None and str(span) == target:
            found.append(target)
            target = next(wanted, None)
    return found


async def test_one_trace_spans_api_relay_consumer_and_worker_task(
    make_stack: StackFactory,
) -> None:
    receiver = OtlpReceiver().start()
    try:
        stack = await make_stack()
        for service in stack.services:
            service.env.pop("OTEL_SERVICE_NAME", None)
            service.env.update(
                OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                OTEL_BSP_SCHEDULE_DELAY="100",
                OTEL_TRACES_SAMPLER="parentbased_always_on",
            )
        await stack.start()
        async with stack.client() as http:
            token = await register_and_login(http, "traced@example.com")
            created = await http.post(
                "/orders/", json=ORDER_BODY, headers={"Authorization": f"Bearer {token}"}
            )
            assert created.status_code == 201, created.text
            order_id = str(created.json()["id"])
            await processed_over_http(http, token, [order_id], timeout=60)

        async def processing_span() -> ReceivedSpan | None:
            return next(
                (
                    span
                    for span in receiver.spans()
                    if span.name == "process order"
                    and span.attributes.get("oms.order_id") == order_id
                ),
                None,
            )

        deepest = await eventually(processing_span, 30, interval=0.2, message="worker spans")

        async def whole_chain() -> list[ReceivedSpan] | None:
            try:
                return ancestry(deepest, receiver.spans())
            except BrokenTraceError:
                return None  # a batch may still be on its way

        await eventually(whole_chain, 15, interval=0.2, message="every ancestor span")
        chain = ancestry(deepest, receiver.spans())
    finally:
        receiver.stop()

    shown = " <- ".join(str(span) for span in chain)
    assert hops_in_order(chain) == EXPECTED_HOPS, shown
    root = chain[-1]
    assert str(root) == "oms-api:server:POST /orders/", shown
    assert root.parent_id is None
    trace_spans = [span for span in receiver.spans() if span.trace_id == root.trace_id]
    assert {span.service for span in trace_spans} >= {"oms-api", "oms-consumer", "oms-worker"}
    # Database work of the worker nests inside the task (SQLAlchemy instrumentation).
    assert any(
        span.service == "oms-worker" and deepest in ancestry(span, trace_spans)[1:]
        for span in trace_spans
        if span.kind == "client"
    ), "no instrumented database/redis call under the worker's processing span"

    # The worker's log line for this order carries the same trace id (log/trace correlation).
    processed_lines = [
        json.loads(line)
        for line in stack.worker.logs().splitlines()
        if line.startswith("{") and '"order processed"' in line and order_id in line
    ]
    assert processed_lines, stack.worker.logs()[-2000:]
    assert processed_lines[0]["trace_id"] == root.trace_id
    assert processed_lines[0]["service"] == "worker"
    # ... and was written by a prefork child, not the worker's main process.
    assert stack.worker.process is not None
    assert processed_lines[0]["pid"] != stack.worker.process.pid
    # Every service logs JSON lines under its own name.
    for service, name in (
        (stack.api, "api"),
        (stack.consumer, "consumer"),
        (stack.worker, "worker"),
    ):
        entries = [json.loads(line) for line in service.logs().splitlines() if line.startswith("{")]
        assert entries, service.logs()[-2000:]
        assert {entry["service"] for entry in entries} == {name}
