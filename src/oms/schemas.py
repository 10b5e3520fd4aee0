"""Request and response bodies: the API contract, shared with clients of the events."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.networks import validate_email

from oms.db.models import UserRole
from oms.orders.schemas import (
    OrderCreate,
    OrderItem,
    OrderOut,
    OrderPage,
    OrderStatusUpdate,
)

__all__ = [
    "OrderCreate",
    "OrderItem",
    "OrderOut",
    "OrderPage",
    "OrderStatusUpdate",
    "Password",
    "TokenOut",
    "UserOut",
    "UserRegister",
    "login_email",
    "normalize_email",
]

Password = Annotated[
    str,
    StringConstraints(min_length=5, max_length=20, pattern=r"^[A-Za-z0-9]+$"),
    Field(description="5-20 characters, ASCII letters and digits only.", examples=["secret123"]),
]


def normalize_email(address: str) -> str:
    """The one form an account's email is stored, looked up and throttled under: email-validator's
    normalisation (what `EmailStr` does: an IDNA `xn--` domain in Unicode, the local part in NFC),
    lower-cased. ValueError when `address` is not an email address."""
    _, normalized = validate_email(address)
    return normalized.strip().lower()


def login_email(username: str) -> str:
    """What a login names: `normalize_email`'s form or, for a string that is no email address
    (no account has one), the string stripped and lower-cased: still looked up and throttled,
    so it is answered like an unknown address."""
    try:
        return normalize_email(username)
    except ValueError:
        return username.strip().lower()


class UserRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(json_schema_extra={"format": "email"})
    password: Password

    @field_validator("email")
    @classmethod
    def _normalize_email(cls, value: str) -> str:
        return normalize_email(value)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    role: UserRole


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")
