"""Orders are answered pre-serialized (one pydantic pass, not two): the bodies still match the
response model and the rate-limit headers, which FastAPI would drop from such responses, stay."""

from __future__ import annotations

import httpx

from oms.schemas import OrderOut
from tests.conftest import Account

ORDER = {"items": [{"name": "book", "quantity": 2, "sku": "B-1"}], "total_price": 19.9}


async def test_create_answers_the_response_model_with_its_headers(
    client: httpx.AsyncClient, alice: Account
) -> None:
    created = await client.post("/orders/", json=ORDER, headers=alice.headers)
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/json"
    body = created.json()
    assert body == OrderOut.model_validate(body).model_dump(mode="json")
    assert (body["user_id"], body["status"], body["total_price"]) == (alice.id, "PENDING", "19.90")
    assert body["items"] == [{"name": "book", "quantity": 2, "sku": "B-1"}]
    assert created.headers["location"] == f"/orders/{body['id']}/"
    assert created.headers["x-ratelimit-limit"] == "5"
    assert created.headers["x-ratelimit-remaining"] == "4"
    assert "idempotent-replayed" not in created.headers

    replayed = await client.post(
        "/orders/", json=ORDER, headers={**alice.headers, "Idempotency-Key": "k1"}
    )
    again = await client.post(
        "/orders/", json=ORDER, headers={**alice.headers, "Idempotency-Key": "k1"}
    )
    assert again.status_code == 201
    assert again.json() == replayed.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["x-ratelimit-remaining"] == "2"


async def test_get_keeps_the_rate_limit_headers_from_the_database_and_the_cache(
    client: httpx.AsyncClient, alice: Account
) -> None:
    created = (await client.post("/orders/", json=ORDER, headers=alice.headers)).json()
    reads = [await client.get(f"/orders/{created['id']}/", headers=alice.headers) for _ in "ab"]
    for remaining, read in zip(("9", "8"), reads, strict=True):
        assert read.status_code == 200
        assert read.json() == created
        assert read.headers["x-ratelimit-limit"] == "10"
        assert read.headers["x-ratelimit-remaining"] == remaining
