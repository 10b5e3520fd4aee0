"""Fault tests on real processes: whatever breaks, every accepted order ends processed, once."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import aio_pika
import pytest

from oms.broker.contracts import DEAD_LETTER_QUEUE_NAME, DEAD_LETTER_REASON_HEADER, QUEUE_NAME
from oms.settings import Settings
from tests.e2e.conftest import FIGURES, StackFactory
from tests.e2e.helpers import metric_value, processed_over_http, task_events
from tests.e2e.rabbit_node import PrivateRabbitNode
from tests.pipeline.support import (
    assert_processed_exactly_once,
    broker_url,
    create_orders,
    eventually,
    order_rows,
    publish,
    queue_depth,
    register_and_login,
    unsent_outbox_count,
    wait_for_queue_depth,
)

pytestmark = pytest.mark.e2e


async def processed_count(settings: Settings, order_ids: list[str]) -> int:
    rows = await order_rows(settings)
    return sum(1 for order_id in order_ids if rows[uuid.UUID(order_id)].processed)


async def test_rabbitmq_stopped_while_orders_are_created_then_started_again(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    node = PrivateRabbitNode(tmp_path / "rabbit")
    await node.start()
    try:
        stack = await (await make_stack(node.url)).start()
        async with stack.client() as http:
            token = await register_and_login(http, "outage@example.com")
            before = await create_orders(http, token, 30)
            await processed_over_http(http, token, before, timeout=60)

            await node.stop()
            during = await create_orders(http, token, 30)  # the API still answers 201

            async def relay_waits() -> bool:
                return await unsent_outbox_count(stack.settings) == len(during)

            await eventually(relay_waits, 10, message="the outbox to hold the new orders")
            assert await processed_count(stack.settings, during) == 0

            restarting = time.monotonic()
            await node.start()
            node_start = time.monotonic() - restarting
            drained_in = await processed_over_http(http, token, during, timeout=120)
        await assert_processed_exactly_once(stack.settings, before + during)
        assert all(service.running for service in stack.services)  # all reconnected by themselves
        await stack.stop()
    finally:
        await node.stop()
    FIGURES.append(
        f"RabbitMQ outage: {len(during)} orders accepted while the broker was down, all "
        f"processed {drained_in:.1f}s after it was back up (the node took {node_start:.1f}s "
        "to start); API, consumer and worker reconnected without restarts"
    )


async def test_worker_killed_mid_task_is_redelivered(make_stack: StackFactory) -> None:
    # One second of work per order keeps both worker children busy when the kill lands.
    stack = await (await make_stack(worker_env={"ORDER_PROCESSING_DELAY_SECONDS": 1.0})).start()
    async with stack.client() as http:
        token = await register_and_login(http, "workerkill@example.com")
        order_ids = await create_orders(http, token, 12)

        async def some_processed() -> bool:
            return await processed_count(stack.settings, order_ids) >= 2

        await eventually(some_processed, 30, message="the worker to get going")
        stack.worker.kill(signal.SIGKILL)
        await stack.worker.wait_exit(10)
        done_at_kill = await processed_count(stack.settings, order_ids)
        assert done_at_kill < len(order_ids)
        first_log = stack.worker.logs()

        restarted = time.monotonic()
        stack.worker.start()
        await stack.worker.wait_ready()
        drained_in = await processed_over_http(http, token, order_ids, timeout=90)
    await assert_processed_exactly_once(stack.settings, order_ids)
    received, succeeded = task_events(first_log)
    interrupted = received - succeeded
    assert interrupted, "the kill should have hit tasks in progress"
    _received_again, succeeded_later = task_events(stack.worker.log_paths[-1].read_text())
    assert interrupted <= succeeded_later  # acks_late: the broker redelivered them
    FIGURES.append(
        f"worker SIGKILL: killed with {len(interrupted)} tasks in progress and "
        f"{done_at_kill}/{len(order_ids)} orders done; all processed "
        f"{drained_in:.1f}s after the restart ({time.monotonic() - restarted:.1f}s incl. start)"
    )


async def test_consumer_killed_loses_nothing(make_stack: StackFactory) -> None:
    stack = await (await make_stack()).start()
    url = broker_url(stack.settings)
    async with stack.client() as http:
        token = await register_and_login(http, "consumerkill@example.com")
        first = await create_orders(http, token, 40)
        stack.consumer.kill(signal.SIGKILL)  # while the first batch is flowing
        await stack.consumer.wait_exit(10)
        second = await create_orders(http, token, 40)

        async def queued() -> bool:
            return await queue_depth(url, QUEUE_NAME) > 0

        await eventually(queued, 10, message="events to wait in new_order")
        stack.consumer.start()
        drained_in = await processed_over_http(http, token, first + second, timeout=90)
    await assert_processed_exactly_once(stack.settings, first + second)
    FIGURES.append(
        f"consumer SIGKILL: {len(first) + len(second)} orders, all processed "
        f"{drained_in:.1f}s after the restart command (process start-up included)"
    )


async def test_poison_message_lands_in_the_dlq_and_the_rest_flows(
    make_stack: StackFactory,
) -> None:
    stack = await (await make_stack()).start()
    url = broker_url(stack.settings)
    async with stack.client() as http:
        token = await register_and_login(http, "poison@example.com")
        before = await create_orders(http, token, 10)
        await publish(url, b'{"event": "order.created"', "application/json")
        after = await create_orders(http, token, 10)
        await processed_over_http(http, token, before + after, timeout=60)
        await wait_for_queue_depth(
            url, DEAD_LETTER_QUEUE_NAME, 1, 10, message="the poison message in the DLQ"
        )
    await assert_processed_exactly_once(stack.settings, before + after)
    connection = await aio_pika.connect(url)
    async with connection:
        queue = await (await connection.channel()).get_queue(DEAD_LETTER_QUEUE_NAME)
        message = await queue.get(timeout=5)
        assert "not an order.created v1 event" in str(
            (message.headers or {})[DEAD_LETTER_REASON_HEADER]
        )
        await message.ack()
    consumer_metrics = stack.consumer.ready_url.replace("/health/ready", "/metrics")
    assert (
        await metric_value(consumer_metrics, 'oms_consumer_messages_total{outcome="dead_lettered"}')
        == 1
    )
    FIGURES.append("poison message: dead-lettered with its reason; the 20 orders around it done")
