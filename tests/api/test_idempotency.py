"""`Idempotency-Key` on order creation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update

from oms.db.models import IdempotencyKey, Order
from tests.api.test_orders import GOOD_ORDER
from tests.conftest import Account


async def count_orders(app: FastAPI) -> int:
    async with app.state.oms.session_factory() as session:
        return int((await session.execute(select(func.count()).select_from(Order))).scalar_one())


async def test_same_key_and_body_replays_the_first_order(
    client: httpx.AsyncClient, app: FastAPI, alice: Account
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "k-1"}
    first = await client.post("/orders/", json=GOOD_ORDER, headers=headers)
    second = await client.post("/orders/", json=GOOD_ORDER, headers=headers)
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert await count_orders(app) == 1


async def test_same_key_with_another_body_is_422(
    client: httpx.AsyncClient, app: FastAPI, alice: Account
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "k-2"}
    assert (await client.post("/orders/", json=GOOD_ORDER, headers=headers)).status_code == 201
    other = {**GOOD_ORDER, "total_price": "20.00"}
    response = await client.post("/orders/", json=other, headers=headers)
    assert response.status_code == 422
    assert response.json()["type"] == "urn:oms:problem:idempotency-key-reused"
    assert await count_orders(app) == 1


async def test_keys_are_per_user(
    client: httpx.AsyncClient, app: FastAPI, alice: Account, bob: Account
) -> None:
    for account in (alice, bob):
        response = await client.post(
            "/orders/", json=GOOD_ORDER, headers={**account.headers, "Idempotency-Key": "shared"}
        )
        assert response.status_code == 201
        assert response.json()["user_id"] == account.id
    assert await count_orders(app) == 2


async def test_expired_key_creates_a_new_order(
    client: httpx.AsyncClient, app: FastAPI, alice: Account
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "k-3"}
    first = await client.post("/orders/", json=GOOD_ORDER, headers=headers)
    async with app.state.oms.session_factory() as session, session.begin():
        await session.execute(
            update(IdempotencyKey).values(created_at=datetime.now(UTC) - timedelta(hours=25))
        )
    again = await client.post("/orders/", json=GOOD_ORDER, headers=headers)
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert await count_orders(app) == 2


async def test_concurrent_requests_with_one_key_create_one_order(
    client: httpx.AsyncClient, app: FastAPI, make_settings: object, alice: Account
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "k-race"}
    responses = await asyncio.gather(
        *(client.post("/orders/", json=GOOD_ORDER, headers=headers) for _ in range(4))
    )
    assert [r.status_code for r in responses] == [201] * 4
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count_orders(app) == 1


async def test_key_longer_than_255_is_422(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.post(
        "/orders/", json=GOOD_ORDER, headers={**alice.headers, "Idempotency-Key": "x" * 256}
    )
    assert response.status_code == 422
