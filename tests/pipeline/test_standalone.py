"""The embedded default: no RabbitMQ, no Celery; the relay processes orders in-process."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import SettingsFactory
from tests.pipeline.support import (
    api_client,
    create_orders,
    eventually,
    order_rows,
    register_and_login,
    unsent_outbox_count,
)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_orders_get_processed_in_process_on_sqlite(make_settings: SettingsFactory) -> None:
    settings = await make_settings(RUN_OUTBOX_RELAY=True, RATE_LIMIT_ENABLED=False)
    assert settings.RABBITMQ_URL is None
    assert settings.database_backend == "sqlite"
    async with api_client(settings) as (_app, http):
        token = await register_and_login(http)
        headers = {"Authorization": f"Bearer {token}"}
        order_ids = await create_orders(http, token, 10)

        async def all_processed_over_http() -> bool:
            for order_id in order_ids:
                body = (await http.get(f"/orders/{order_id}/", headers=headers)).json()
                if body["processed_at"] is None:
                    return False
            return True

        await eventually(all_processed_over_http, 20, message="orders processed in-process")
    rows = await order_rows(settings)
    assert {rows[uuid.UUID(order_id)].version for order_id in order_ids} == {2}
    assert await unsent_outbox_count(settings) == 0
