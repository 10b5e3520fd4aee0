"""Orders: validation, ownership, the state machine, caching and pagination."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from oms.settings import Settings
from tests.conftest import Account, AccountFactory

OrderBody = dict[str, Any]
GOOD_ORDER: OrderBody = {"items": [{"name": "book", "quantity": 2}], "total_price": "19.90"}


async def create_order(
    client: httpx.AsyncClient, account: Account, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await client.post("/orders/", json=body or GOOD_ORDER, headers=account.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture
async def order(client: httpx.AsyncClient, alice: Account) -> OrderBody:
    """An order of alice's, as created."""
    return await create_order(client, alice)


def set_status(
    client: httpx.AsyncClient, account: Account, order_id: str, status: object
) -> Awaitable[httpx.Response]:
    """PATCH the order's status as `account`."""
    return client.patch(f"/orders/{order_id}/", json={"status": status}, headers=account.headers)


async def raw_cache_entry(app: FastAPI, settings: Settings, order_id: str) -> dict[str, Any] | None:
    """What the cache holds for an order, read from Redis itself (or the in-process cache)."""
    if settings.REDIS_URL:
        redis = Redis.from_url(settings.REDIS_URL)
        try:
            entry = await redis.hgetall(f"{settings.REDIS_KEY_PREFIX}order:{order_id}")
            ttl = await redis.ttl(f"{settings.REDIS_KEY_PREFIX}order:{order_id}")
        finally:
            await redis.aclose()
        if not entry:
            return None
        return {"version": int(entry[b"v"]), "body": orjson.loads(entry[b"body"]), "ttl": ttl}
    stored = app.state.oms.cache.inner._entries.get(order_id)
    if stored is None:
        return None
    return {"version": stored[1], "body": orjson.loads(stored[2]), "ttl": 300}


# --- create -------------------------------------------------------------------------------


async def test_create_returns_the_order(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.post(
        "/orders",
        json={"items": [{"name": "pen", "quantity": 1, "sku": "P-1"}], "total_price": 3.1},
        headers=alice.headers,
    )
    assert response.status_code == 201
    order = response.json()
    uuid.UUID(order["id"])
    assert order["user_id"] == alice.id
    assert order["items"] == [{"name": "pen", "quantity": 1, "sku": "P-1"}]
    assert order["total_price"] == "3.10"
    assert order["status"] == "PENDING"
    assert order["processed_at"] is None
    assert order["created_at"].endswith(("Z", "+00:00"))
    assert response.headers["location"] == f"/orders/{order['id']}/"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": [{"name": "a", "quantity": 0}], "total_price": "1.00"}, "quantity"),
        ({"items": [{"name": "a", "quantity": -1}], "total_price": "1.00"}, "quantity"),
        ({"items": [{"name": "a", "quantity": 1.5}], "total_price": "1.00"}, "quantity"),
        ({"items": [{"name": "", "quantity": 1}], "total_price": "1.00"}, "name"),
        ({"items": [{"quantity": 1}], "total_price": "1.00"}, "name"),
        ({"items": [], "total_price": "1.00"}, "items"),
        ({"items": [{"name": "a", "quantity": 1}], "total_price": "1.001"}, "total_price"),
        ({"items": [{"name": "a", "quantity": 1}], "total_price": "12345678901"}, "total_price"),
        ({"items": [{"name": "a", "quantity": 1}], "total_price": "-5.00"}, "total_price"),
        ({"items": [{"name": "a", "quantity": 1}], "total_price": "0"}, "total_price"),
        ({"items": [{"name": "a", "quantity": 1}], "total_price": "abc"}, "total_price"),
        ({"items": [{"name": "a", "quantity": 1}], "total_price": "NaN"}, "total_price"),
        ({"items": [{"name": "a", "quantity": 1}], "total_price": "Infinity"}, "total_price"),
        ({"items": [{"name": "a", "quantity": 1}]}, "total_price"),
        ({"items": "book", "total_price": "1.00"}, "items"),
    ],
)
async def test_create_rejects_invalid_orders(
    client: httpx.AsyncClient, alice: Account, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/orders/", json=body, headers=alice.headers)
    assert response.status_code == 422, response.text
    assert any(field in error["loc"] for error in response.json()["errors"])


async def test_largest_price_is_accepted(client: httpx.AsyncClient, alice: Account) -> None:
    order = await create_order(
        client, alice, {"items": [{"name": "car", "quantity": 1}], "total_price": "99999999.99"}
    )
    assert order["total_price"] == "99999999.99"


async def test_malformed_json_is_422(client: httpx.AsyncClient, alice: Account) -> None:
    response = await client.post(
        "/orders/",
        content=b"{not json",
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


# --- read and cache -----------------------------------------------------------------------


async def test_get_is_cached_with_ttl_and_served_from_cache(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, alice: Account, order: OrderBody
) -> None:
    assert await raw_cache_entry(app, settings, order["id"]) is None  # filled on read, not write
    first = await client.get(f"/orders/{order['id']}/", headers=alice.headers)
    assert first.status_code == 200
    entry = await raw_cache_entry(app, settings, order["id"])
    assert entry is not None
    assert entry["body"] == first.json()
    assert 0 < entry["ttl"] <= 300
    # Prove the second read comes from the cache: change the row behind the cache's back.
    async with app.state.oms.engine.begin() as connection:
        from sqlalchemy import text

        await connection.execute(
            text("UPDATE orders SET total_price = 1 WHERE id = :id"),
            {"id": order["id"] if settings.REDIS_URL else uuid.UUID(order["id"]).hex},
        )
    second = await client.get(f"/orders/{order['id']}", headers=alice.headers)
    assert second.json()["total_price"] == "19.90"


async def test_other_users_get_404_even_from_a_warm_cache(
    client: httpx.AsyncClient, alice: Account, bob: Account, order: OrderBody
) -> None:
    assert (await client.get(f"/orders/{order['id']}/", headers=alice.headers)).status_code == 200
    response = await client.get(f"/orders/{order['id']}/", headers=bob.headers)
    assert response.status_code == 404
    assert response.json()["type"] == "urn:oms:problem:order-not-found"


async def test_cold_cache_other_user_gets_404(
    client: httpx.AsyncClient, bob: Account, order: OrderBody
) -> None:
    response = await client.get(f"/orders/{order['id']}/", headers=bob.headers)
    assert response.status_code == 404


async def test_admin_sees_any_order(
    client: httpx.AsyncClient, admin: Account, order: OrderBody
) -> None:
    response = await client.get(f"/orders/{order['id']}/", headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["id"] == order["id"]


async def test_unknown_order_is_404_and_malformed_id_is_422(
    client: httpx.AsyncClient, alice: Account
) -> None:
    missing = await client.get(f"/orders/{uuid.uuid4()}/", headers=alice.headers)
    assert missing.status_code == 404
    malformed = await client.get("/orders/not-a-uuid/", headers=alice.headers)
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["loc"] == ["path", "order_id"]


# --- status changes -----------------------------------------------------------------------

LEGAL = {("PENDING", "PAID"), ("PENDING", "CANCELED"), ("PAID", "SHIPPED"), ("PAID", "CANCELED")}
STATUSES = ["PENDING", "PAID", "SHIPPED", "CANCELED"]
PATHS_TO = {
    "PENDING": [],
    "PAID": ["PAID"],
    "SHIPPED": ["PAID", "SHIPPED"],
    "CANCELED": ["CANCELED"],
}


async def bring_to(client: httpx.AsyncClient, admin: Account, order_id: str, status: str) -> None:
    for step in PATHS_TO[status]:
        response = await set_status(client, admin, order_id, step)
        assert response.status_code == 200, response.text


async def transition(
    client: httpx.AsyncClient, admin: Account, order_id: str, current: str, target: str
) -> httpx.Response:
    """The admin's PATCH to `target` of an order brought to `current` first."""
    await bring_to(client, admin, order_id, current)
    return await set_status(client, admin, order_id, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [(c, t) for c in STATUSES for t in STATUSES if (c, t) not in LEGAL],
)
async def test_every_illegal_transition_is_409_with_the_allowed_ones(
    client: httpx.AsyncClient, admin: Account, current: str, target: str, order: OrderBody
) -> None:
    response = await transition(client, admin, order["id"], current, target)
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["type"] == "urn:oms:problem:illegal-transition"
    assert problem["current_status"] == current
    expected = sorted(t for c, t in LEGAL if c == current)
    assert sorted(problem["allowed_transitions"]) == expected


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
async def test_admin_makes_every_legal_transition(
    client: httpx.AsyncClient, admin: Account, current: str, target: str, order: OrderBody
) -> None:
    response = await transition(client, admin, order["id"], current, target)
    assert response.status_code == 200
    assert response.json()["status"] == target


async def test_owner_may_cancel_but_not_pay(
    client: httpx.AsyncClient, alice: Account, order: OrderBody
) -> None:
    paid = await set_status(client, alice, order["id"], "PAID")
    assert paid.status_code == 403
    assert paid.json()["type"] == "urn:oms:problem:transition-forbidden"
    canceled = await client.patch(
        f"/orders/{order['id']}", json={"status": "CANCELLED"}, headers=alice.headers
    )
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "CANCELED"


async def test_patch_by_another_user_is_404(
    client: httpx.AsyncClient, bob: Account, order: OrderBody
) -> None:
    response = await set_status(client, bob, order["id"], "CANCELED")
    assert response.status_code == 404


@pytest.mark.parametrize("status", ["DELIVERED", "pending", "", None, 3])
async def test_patch_rejects_unknown_status(
    client: httpx.AsyncClient, alice: Account, status: object, order: OrderBody
) -> None:
    response = await set_status(client, alice, order["id"], status)
    assert response.status_code == 422


async def test_patch_rewrites_the_cache(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, alice: Account, order: OrderBody
) -> None:
    await client.get(f"/orders/{order['id']}/", headers=alice.headers)  # warm the cache
    await set_status(client, alice, order["id"], "CANCELED")
    entry = await raw_cache_entry(app, settings, order["id"])
    assert entry is not None
    assert entry["body"]["status"] == "CANCELED"
    assert entry["version"] == 2
    fetched = await client.get(f"/orders/{order['id']}/", headers=alice.headers)
    assert fetched.json()["status"] == "CANCELED"


async def test_stale_cache_fill_never_overwrites_a_newer_version(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, alice: Account, order: OrderBody
) -> None:
    await set_status(client, alice, order["id"], "CANCELED")
    # A reader that loaded version 1 before the PATCH tries to fill the cache late.
    stale = orjson.dumps({**order, "status": "PENDING"})
    assert await app.state.oms.cache.inner.put(order["id"], 1, stale) is False
    fetched = await client.get(f"/orders/{order['id']}/", headers=alice.headers)
    assert fetched.json()["status"] == "CANCELED"


async def test_concurrent_patches_do_not_both_win(
    client: httpx.AsyncClient, admin: Account, order: OrderBody
) -> None:
    await bring_to(client, admin, order["id"], "PAID")
    responses = await asyncio.gather(
        set_status(client, admin, order["id"], "SHIPPED"),
        set_status(client, admin, order["id"], "CANCELED"),
    )
    codes = sorted(response.status_code for response in responses)
    assert codes == [200, 409], [r.text for r in responses]
    winner = next(r for r in responses if r.status_code == 200).json()["status"]
    final = await client.get(f"/orders/{order['id']}/", headers=admin.headers)
    assert final.json()["status"] == winner


# --- listing ------------------------------------------------------------------------------


async def test_list_is_newest_first_and_keyset_paginated(
    client: httpx.AsyncClient, make_settings: Any, alice: Account
) -> None:
    created = [
        (
            await create_order(
                client,
                alice,
                {"items": [{"name": f"i{n}", "quantity": 1}], "total_price": f"{n + 1}.00"},
            )
        )["id"]
        for n in range(5)
    ]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await client.get(f"/orders/user/{alice.id}", params=params, headers=alice.headers)
        assert page.status_code == 200
        body = page.json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


async def test_list_of_someone_else_is_403_and_admin_may(
    client: httpx.AsyncClient, alice: Account, bob: Account, admin: Account
) -> None:
    await create_order(client, alice)
    denied = await client.get(f"/orders/user/{alice.id}", headers=bob.headers)
    assert denied.status_code == 403
    allowed = await client.get(f"/orders/user/{alice.id}/", headers=admin.headers)
    assert allowed.status_code == 200
    assert len(allowed.json()["items"]) == 1
    missing = await client.get("/orders/user/999999", headers=admin.headers)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"cursor": "garbage!!"}, {"limit": "x"}]
)
async def test_list_rejects_bad_paging(
    client: httpx.AsyncClient, alice: Account, params: dict[str, Any]
) -> None:
    response = await client.get(f"/orders/user/{alice.id}", params=params, headers=alice.headers)
    assert response.status_code == 422


async def test_orders_of_a_fresh_user_are_empty(
    client: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    carol = await make_account("carol@example.com")
    response = await client.get(f"/orders/user/{carol.id}", headers=carol.headers)
    assert response.json() == {"items": [], "next_cursor": None}


def test_decimal_serialisation_keeps_two_places() -> None:
    from oms.schemas import OrderCreate

    parsed = OrderCreate.model_validate(
        {"items": [{"name": "a", "quantity": 1}], "total_price": 0.1}
    )
    assert parsed.total_price == Decimal("0.1")


@pytest.mark.parametrize("text", ["nul\x00byte", "emoji 📦", "rtl \u202e", "\ud7ff"])
async def test_unusual_text_in_items_is_stored_or_refused_cleanly(
    client: httpx.AsyncClient, alice: Account, text: str
) -> None:
    response = await client.post(
        "/orders/",
        json={"items": [{"name": text, "quantity": 1, "note": text}], "total_price": "1.00"},
        headers=alice.headers,
    )
    if "\x00" in text:
        assert response.status_code == 422  # PostgreSQL cannot store NUL in text or JSONB
    else:
        assert response.status_code == 201, response.text
        assert response.json()["items"][0]["name"] == text
