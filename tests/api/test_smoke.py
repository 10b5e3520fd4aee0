from __future__ import annotations

import httpx

from tests.conftest import Account


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_create_and_get_order(client: httpx.AsyncClient, alice: Account) -> None:
    created = await client.post(
        "/orders/",
        json={"items": [{"name": "book", "quantity": 2}], "total_price": "19.90"},
        headers=alice.headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "PENDING"
    assert body["total_price"] == "19.90"
    fetched = await client.get(f"/orders/{body['id']}/", headers=alice.headers)
    assert fetched.status_code == 200
    assert fetched.json() == body
