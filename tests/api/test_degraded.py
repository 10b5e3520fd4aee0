"""Redis down: the API keeps serving from the database and lets requests through."""

from __future__ import annotations

from tests.api.test_orders import GOOD_ORDER
from tests.conftest import ServeFactory

CLOSED_PORT = "redis://127.0.0.1:1/0"


async def test_api_serves_without_its_cache_and_rate_limit_store(
    serve: ServeFactory,
) -> None:
    async with serve(REDIS_URL=CLOSED_PORT, REDIS_URL_RATE_LIMIT=CLOSED_PORT) as client:
        assert (
            await client.post("/register", json={"email": "d@example.com", "password": "abc12"})
        ).status_code == 201
        token = (
            await client.post("/token", data={"username": "d@example.com", "password": "abc12"})
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        created = await client.post("/orders/", json=GOOD_ORDER, headers=headers)
        assert created.status_code == 201
        order_id = created.json()["id"]
        fetched = await client.get(f"/orders/{order_id}/", headers=headers)
        assert fetched.status_code == 200
        assert fetched.json() == created.json()
        patched = await client.patch(
            f"/orders/{order_id}/", json={"status": "CANCELED"}, headers=headers
        )
        assert patched.status_code == 200
        ready = await client.get("/health/ready")
        metrics = (await client.get("/metrics")).text
    # Still ready (a Redis outage must not take every API pod out of its Service), and says so.
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["cache"].startswith("error")
    assert 'oms_order_cache_requests_total{result="error"}' in metrics
    assert "oms_rate_limit_errors_total" in metrics
