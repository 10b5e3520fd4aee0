"""The three services as real processes, driven over HTTP: every order processed once."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import FIGURES, StackFactory
from tests.e2e.helpers import metric_value, processed_over_http
from tests.pipeline.support import assert_processed_exactly_once, create_orders, register_and_login

pytestmark = pytest.mark.e2e

ORDERS = 200


async def test_two_hundred_orders_are_each_processed_exactly_once(
    make_stack: StackFactory,
) -> None:
    stack = await (await make_stack()).start()
    async with stack.client() as http:
        token = await register_and_login(http, "load@example.com")
        started = time.monotonic()
        order_ids = await create_orders(http, token, ORDERS)
        created_in = time.monotonic() - started
        drained_in = await processed_over_http(http, token, order_ids, timeout=120)
    await assert_processed_exactly_once(stack.settings, order_ids)
    worker_metrics = stack.worker.ready_url.replace("/health/ready", "/metrics")
    processed = await metric_value(worker_metrics, 'oms_worker_tasks_total{outcome="processed"}')
    assert processed == ORDERS  # one effective run per order, counted across prefork children
    FIGURES.append(
        f"happy path: {ORDERS} orders created in {created_in:.1f}s, all processed "
        f"{drained_in:.1f}s after the last 201 (total {created_in + drained_in:.1f}s)"
    )
