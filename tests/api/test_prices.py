"""Prices are canonical: a JSON number, or a string of ASCII digits with at most two decimals.
Anything else a Decimal would take ("1_000", " 5 ", "1E+7", other scripts' digits, "-0.00") is
refused with a 422 naming the field, and no negative zero is ever stored or returned."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from oms.orders.schemas import OrderCreate, OrderItem, OrderOut
from tests.api.test_hostile_input import assert_problem
from tests.conftest import Account

NON_CANONICAL = ["1_000", " 5 ", "1E+7", "\u0665", "-0.00", "5.", ".5", "+5", "5\n", "1.999"]
ITEM = {"name": "pen", "quantity": 1}


def _order(unit_price: Any = "1.00", total_price: Any = "1.00") -> dict[str, Any]:
    return {"items": [{**ITEM, "unit_price": unit_price}], "total_price": total_price}


@pytest.mark.parametrize("price", NON_CANONICAL)
def test_the_schema_refuses_a_non_canonical_unit_price(price: str) -> None:
    with pytest.raises(ValidationError) as raised:
        OrderItem.model_validate({**ITEM, "unit_price": price})
    (error,) = raised.value.errors()
    assert error["loc"] == ("unit_price",)


@pytest.mark.parametrize("price", NON_CANONICAL)
def test_the_schema_refuses_a_non_canonical_total_price(price: str) -> None:
    with pytest.raises(ValidationError) as raised:
        OrderCreate.model_validate({"items": [ITEM], "total_price": price})
    (error,) = raised.value.errors()
    assert error["loc"] == ("total_price",)


@pytest.mark.parametrize(
    ("price", "written"),
    [("9.99", "9.99"), ("5", "5.00"), ("0.5", "0.50"), (5, "5.00"), (19.99, "19.99")],
)
def test_the_schema_takes_canonical_strings_and_json_numbers(price: Any, written: str) -> None:
    order = OrderCreate.model_validate(_order(price, price))
    assert order.items[0].model_dump(mode="json")["unit_price"] == written
    assert order.total_price == Decimal(written)


def test_a_json_negative_zero_becomes_zero() -> None:
    item = OrderItem.model_validate({**ITEM, "unit_price": -0.0})
    assert item.unit_price == 0
    assert item.unit_price is not None
    assert not item.unit_price.is_signed()
    assert item.model_dump(mode="json")["unit_price"] == "0.00"


def test_a_negative_zero_stored_before_the_rule_reads_back_as_zero() -> None:
    now = datetime.now(UTC)
    stored = {
        "id": "00000000-0000-0000-0000-000000000001",
        "user_id": 1,
        "items": [{**ITEM, "unit_price": "-0.00"}],
        "total_price": "1.00",
        "status": "PENDING",
        "created_at": now,
        "updated_at": now,
    }
    returned = OrderOut.model_validate(stored).model_dump(mode="json")
    assert returned["items"][0]["unit_price"] == "0.00"


@pytest.mark.parametrize("price", NON_CANONICAL)
@pytest.mark.parametrize(
    ("field", "loc"),
    [
        ("unit_price", ["body", "items", "0", "unit_price"]),
        ("total_price", ["body", "total_price"]),
    ],
)
async def test_the_api_refuses_a_non_canonical_price(
    client: httpx.AsyncClient, alice: Account, price: str, field: str, loc: list[str]
) -> None:
    response = await client.post("/orders/", json=_order(**{field: price}), headers=alice.headers)
    problem = assert_problem(response, 422, "validation-error")
    assert [error["loc"] for error in problem["errors"]] == [loc]
    assert field in problem["detail"]


async def test_a_json_negative_zero_is_stored_and_returned_as_zero(
    client: httpx.AsyncClient, alice: Account
) -> None:
    created = await client.post("/orders/", json=_order(unit_price=-0.0), headers=alice.headers)
    assert created.status_code == 201, created.text
    assert created.json()["items"][0]["unit_price"] == "0.00"
    read = await client.get(f"/orders/{created.json()['id']}/", headers=alice.headers)
    assert read.status_code == 200, read.text
    assert read.json()["items"][0]["unit_price"] == "0.00"


async def test_canonical_prices_round_trip_through_the_database(
    client: httpx.AsyncClient, alice: Account
) -> None:
    created = await client.post(
        "/orders/", json=_order(unit_price="1000", total_price=12.5), headers=alice.headers
    )
    assert created.status_code == 201, created.text
    read = await client.get(f"/orders/{created.json()['id']}/", headers=alice.headers)
    assert read.json()["items"][0]["unit_price"] == "1000.00"
    assert read.json()["total_price"] == "12.50"
