"""The embedded default: no RabbitMQ, no Celery; the relay processes orders in-process."""

from __future__ import annotations

import pytest

from tests.conftest import SettingsFactory, api_client
from tests.pipeline.support import (
    assert_processed_exactly_once,
    create_orders,
    eventually,
    register_and_login,
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
    await assert_processed_exactly_once(settings, order_ids)
