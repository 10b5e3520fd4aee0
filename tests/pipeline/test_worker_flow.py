"""API relay -> RabbitMQ -> consumer -> Celery -> a real worker process -> processed."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
from redis.asyncio import Redis

from oms.broker.celery_app import create_celery_app
from oms.orders.service import OrderService
from oms.schemas import OrderCreate
from oms.settings import Settings
from oms_consumer.dispatch import CeleryDispatcher
from oms_consumer.service import OrderEventConsumer
from tests.conftest import SettingsFactory, api_client
from tests.harness import free_port
from tests.pipeline.support import (
    ORDER_BODY,
    assert_processed_exactly_once,
    create_orders,
    database_sessions,
    eventually,
    order_cache,
    order_rows,
    register_and_login,
    worker_process,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def _task_results(settings: Settings) -> dict[str, dict[str, object]]:
    """Every Celery result stored under this test's Redis prefix, by task id."""
    assert settings.REDIS_URL_CELERY
    redis = Redis.from_url(settings.REDIS_URL_CELERY)
    prefix = f"{settings.REDIS_KEY_PREFIX}celery-task-meta-"
    try:
        found: dict[str, dict[str, object]] = {}
        async for key in redis.scan_iter(match=f"{prefix}*", count=500):
            raw = await redis.get(key)
            if raw is not None:
                found[key.decode().removeprefix(prefix)] = orjson.loads(raw)
        return found
    finally:
        await redis.aclose()


async def _create_traced_order(settings: Settings, user_id: int) -> uuid.UUID:
    """An order whose outbox row carries trace context (as the observability work will set)."""
    async with database_sessions(settings) as factory, order_cache(settings) as cache:
        created = await OrderService(factory, cache).create(
            user_id,
            OrderCreate.model_validate(ORDER_BODY),
            trace_headers={"traceparent": TRACEPARENT},
        )
        return created.order.id


async def test_orders_flow_through_consumer_and_worker(
    pipeline_settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = await pipeline_settings_factory(RUN_OUTBOX_RELAY=True)
    worker = worker_process(settings, tmp_path, free_port()).start()
    consumer = OrderEventConsumer(
        settings, CeleryDispatcher(create_celery_app(settings), attempts=2)
    )
    try:
        assert await consumer.start()
        async with api_client(settings) as (app, http):
            token = await register_and_login(http)
            headers = {"Authorization": f"Bearer {token}"}
            order_ids = [uuid.UUID(order_id) for order_id in await create_orders(http, token, 20)]
            # Read once before processing so the cache holds a `processed_at: null` copy.
            stale = await http.get(f"/orders/{order_ids[0]}/", headers=headers)
            user_id = int(stale.json()["user_id"])
            traced_id = await _create_traced_order(settings, user_id)
            app.state.oms.outbox_wakeup.set()
            order_ids.append(traced_id)
            await worker.wait_ready()

            async def all_processed() -> bool:
                rows = await order_rows(settings)
                return all(rows[order_id].processed for order_id in order_ids)

            await eventually(all_processed, 60, message="every order processed")
            await assert_processed_exactly_once(settings, order_ids)
            fresh = await http.get(f"/orders/{order_ids[0]}/", headers=headers)
            assert fresh.json()["processed_at"] is not None  # the cache did not stay stale

            # Successful tasks store no result: a Redis round trip per task nobody read.
            assert await _task_results(settings) == {}
    finally:
        await consumer.stop()
        await worker.stop()
    # The trace reached the task (the parent span id is the consumer's when it traces).
    assert f"00-{TRACEPARENT.split('-')[1]}-" in worker.logs()
