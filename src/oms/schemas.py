"""Request and response bodies: the API contract, shared with clients of the events."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
    model_validator,
)

from oms.db.models import OrderStatus, UserRole

Password = Annotated[
    str,
    StringConstraints(min_length=5, max_length=20, pattern=r"^[A-Za-z0-9]+$"),
    Field(description="5-20 characters, ASCII letters and digits only.", examples=["secret123"]),
]

# Money travels as a string with exactly two decimals: floats would round.
Money = Annotated[
    Decimal,
    PlainSerializer(lambda value: f"{value:.2f}", return_type=str, when_used="json"),
]


class UserRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    password: Password

    @field_validator("email")
    @classmethod
    def _normalize_email(cls, value: str) -> str:
        return value.strip().lower()


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    role: UserRole


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


class OrderItem(BaseModel):
    """One line of an order. Unknown fields (sku, price, ...) are kept as given."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, value: Any) -> Any:
        # PostgreSQL can store NUL neither in text nor in JSONB: refuse it up front.
        if _contains_nul(value):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return value

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    quantity: Annotated[int, Field(ge=1, le=1_000_000)]


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: Annotated[list[OrderItem], Field(min_length=1, max_length=500)]
    total_price: Annotated[
        Decimal,
        Field(gt=0, max_digits=10, decimal_places=2, examples=["19.99"]),
    ]

    @field_validator("total_price", mode="before")
    @classmethod
    def _no_float_noise(cls, value: Any) -> Any:
        # A JSON number like 19.99 arrives as a float; go through its repr, not its binary value.
        return str(value) if isinstance(value, float) else value


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
    items: list[dict[str, Any]]
    total_price: Money
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    processed_at: datetime | None = Field(
        default=None, description="When the pipeline processed the order; null until then."
    )


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page; null on the last page."
    )
