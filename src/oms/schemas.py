"""Request and response bodies: the API contract, shared with clients of the events."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator

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
]

Password = Annotated[
    str,
    StringConstraints(min_length=5, max_length=20, pattern=r"^[A-Za-z0-9]+$"),
    Field(description="5-20 characters, ASCII letters and digits only.", examples=["secret123"]),
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
