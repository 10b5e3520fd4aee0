"""API relay -> RabbitMQ -> consumer -> Celery -> a real worker process -> processed."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
from redis.asyncio import Redis

from oms.pipeline.celery_config import create_celery_app
from oms.settings import Settings
from oms_consumer.dispatch import CeleryDispatcher
from oms_consumer.service import OrderEventConsumer
from tests.conftest import SettingsFactory
from tests.pipeline.support import (
    api_client,
    create_orders,
    eventually,
    free_port,
    order_rows,
    register_and_login,
    unsent_outbox_count,
    worker_process,
)


async def _results(settings: Settings, task_ids: list[str]) -> dict[str, dict[str, object]]:
    assert settings.REDIS_URL_CELERY
    redis = Redis.from_url(settings.REDIS_URL_CELERY)
    try:
        found: dict[str, dict[str, object]] = {}
        for task_id in task_ids:
            raw = await redis.get(f"{settings.REDIS_KEY_PREFIX}celery-task-meta-{task_id}")
            if raw is not None:
                found[task_id] = orjson.loads(raw)
        return found
    finally:
        await redis.aclose()


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
        async with api_client(settings) as (_app, http):
            token = await register_and_login(http)
            order_ids = [uuid.UUID(order_id) for order_id in await create_orders(http, token, 20)]
            await worker.wait_healthy()

            async def all_processed() -> bool:
                rows = await order_rows(settings)
                return all(rows[order_id].processed for order_id in order_ids)

            await eventually(all_processed, 60, message="every order processed")
            rows = await order_rows(settings)
            assert {rows[order_id].version for order_id in order_ids} == {2}
            assert await unsent_outbox_count(settings) == 0
            first = (
                await http.get(
                    f"/orders/{order_ids[0]}/", headers={"Authorization": f"Bearer {token}"}
                )
            ).json()
            assert first["processed_at"] is not None
    finally:
        await consumer.stop()
        await worker.stop()
    print(worker.logs()[-3000:])
