"""Order request and response bodies (re-exported by `oms.schemas`). A module of their own
because the worker serializes orders: the user schemas' e-mail validation is the API's alone."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError

from oms.db.models import OrderStatus


def _without_negative_zero(value: Decimal) -> Decimal:
    # Decimal keeps the sign of a zero (a JSON -0.0 becomes Decimal("-0.0"), printed "-0.00");
    # an amount of money has none.
    return value.copy_abs() if value.is_zero() else value


# Money travels as a string with exactly two decimals: floats would round.
Money = Annotated[
    Decimal,
    AfterValidator(_without_negative_zero),
    PlainSerializer(
        lambda value: f"{_without_negative_zero(value):.2f}", return_type=str, when_used="json"
    ),
]

# A price sent as a string must be written the way the API writes prices: ASCII digits, at most
# two decimals. Decimal() alone would also take "1_000", " 5 ", "1E+7", "-0.00" and the digits
# of any script (Arabic-Indic five), none of which a client means as a price.
CANONICAL_PRICE = re.compile(r"[0-9]+(\.[0-9]{1,2})?")


# Printable text: no NUL or other control characters (PostgreSQL cannot store NUL at all).
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"
# Free text may also hold tabs and line breaks.
FREE_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

ITEM_NAME_MAX = 200
ITEM_QUANTITY_MAX = 1_000_000
ITEM_NOTE_MAX = 500
ORDER_ITEMS_MAX = 500


def _absent(value: Any) -> bool:
    return value is None


class OrderItem(BaseModel):
    """One line of an order: exactly these fields, each bounded; anything else is refused.
    Optional fields the client did not give are left out of the stored and returned item."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=ITEM_NAME_MAX, pattern=PLAIN_TEXT
        ),
        Field(description="The product's name.", examples=["Keyboard"]),
    ]
    quantity: Annotated[
        int, Field(strict=True, ge=1, le=ITEM_QUANTITY_MAX, description="A whole number ≥ 1.")
    ]
    sku: Annotated[
        str | None,
        Field(
            default=None,
            exclude_if=_absent,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$",
            description="The shop's stock-keeping unit, if the client knows it.",
            examples=["KB-101"],
        ),
    ] = None
    unit_price: Annotated[
        Money | None,
        Field(
            default=None,
            exclude_if=_absent,
            ge=0,
            max_digits=10,
            decimal_places=2,
            description="Price of one unit as quoted to the client (informative).",
            examples=["9.99"],
        ),
    ] = None
    note: Annotated[
        str | None,
        StringConstraints(max_length=ITEM_NOTE_MAX, pattern=FREE_TEXT),
        Field(
            default=None,
            exclude_if=_absent,
            description="Free text for this line (gift wrap, size, ...).",
        ),
    ] = None

    @field_validator("unit_price", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Any:
        return _price_from_request(value)


class OrderItemOut(OrderItem):
    """An order item as stored and returned. Read without the request's rule on how a price is
    written: items stored before it may hold "-0.00" (returned as "0.00"). Takes `OrderItem`
    instances too (an order is returned from the request's own items)."""

    model_config = ConfigDict(from_attributes=True)

    @field_validator("unit_price", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Any:
        return _decimal_from_json(value)


def _decimal_from_json(value: Any) -> Any:
    # A JSON number like 19.99 arrives as a float; go through its repr, not its binary value.
    return str(value) if isinstance(value, float) else value


def _price_from_request(value: Any) -> Any:
    """A price from a request: a JSON number, or a string in the canonical form."""
    if isinstance(value, str) and not CANONICAL_PRICE.fullmatch(value):
        raise PydanticCustomError(
            "price_format",
            "a price is a JSON number or a string of ASCII digits with at most two decimals,"
            ' like "9.99"',
        )
    return _decimal_from_json(value)


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: Annotated[list[OrderItem], Field(min_length=1, max_length=ORDER_ITEMS_MAX)]
    total_price: Annotated[
        Decimal,
        Field(gt=0, max_digits=10, decimal_places=2, examples=["19.99"]),
    ]

    @field_validator("total_price", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Any:
        return _price_from_request(value)


class OrderStatusUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: OrderStatus = Field(description="CANCELLED is accepted as an alias of CANCELED.")

    @field_validator("status", mode="before")
    @classmethod
    def _accept_british_spelling(cls, value: Any) -> Any:
        return "CANCELED" if value == "CANCELLED" else value


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: int
    items: list[OrderItemOut]
    total_price: Money
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    processed_at: datetime | None = Field(
        default=None,
        description=(
            "When the order-processing pipeline saw the order (its creation event went through);"
            " null until then. Not a verdict on the order, and set whatever its status."
        ),
    )


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page; null on the last page."
    )
