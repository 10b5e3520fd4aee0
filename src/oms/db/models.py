"""SQLAlchemy models: the single description of our tables (Alembic migrations follow it)."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    TypeDecorator,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Longest `outbox_events.last_error` kept (characters).
LAST_ERROR_LENGTH = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONDocument = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class OrderStatus(enum.StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    SHIPPED = "SHIPPED"
    CANCELED = "CANCELED"


class UserRole(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"


class User(Base):
    __tablename__ = "users"
    # An id is never handed out twice, so nothing keyed by a deleted user's id (tokens, the
    # access entry, cached orders) can ever describe a new account. PostgreSQL's sequence never
    # goes back; SQLite without AUTOINCREMENT reuses the highest id once its row is deleted.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Random and never changed: every token carries it (claim `akey`), so a token belongs to this
    # account itself, not merely to its id and a generation counter that starts at 0 for anyone.
    account_key: Mapped[uuid.UUID] = mapped_column(
        Uuid, nullable=False, unique=True, default=uuid.uuid4
    )
    # Stored lower-cased: the unique constraint then makes emails case-insensitive.
    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    hashed_password: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[UserRole] = mapped_column(
        Enum(
            UserRole,
            name="user_role",
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        nullable=False,
        default=UserRole.USER,
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # Tokens carry the generation they were issued under; bumping it revokes them all.
    token_generation: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        # Serves GET /orders/user/{id}: newest first, keyset pagination on (created_at, id).
        Index("ix_orders_user_id_created_at_id", "user_id", "created_at", "id"),
        CheckConstraint("total_price > 0", name="total_price_positive"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, nullable=False)
    # The items as first stored, kept by migration 0003 when it had to reshape them into the
    # strict item schema (unknown or invalid fields dropped from `items`); null otherwise.
    legacy_items: Mapped[list[Any] | None] = mapped_column(JSONDocument, nullable=True)
    total_price: Mapped[Decimal] = mapped_column(Numeric(10, 2), nullable=False)
    status: Mapped[OrderStatus] = mapped_column(
        Enum(OrderStatus, name="order_status", native_enum=False, length=16),
        nullable=False,
        default=OrderStatus.PENDING,
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Bumped by every write; the cache keeps the highest version it has seen (see oms.cache).
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class IdempotencyKey(Base):
    """Remembers which order an `Idempotency-Key` created, per user, for a limited time."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), nullable=False
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class OutboxEvent(Base):
    """An event written in the same transaction as the change it describes (outbox pattern).

    Retry and parking state lives on the row itself rather than in a separate dead-letter
    table: parking and replaying are then single-row UPDATEs in the relay's own transaction
    (nothing is copied, so nothing can be lost or duplicated between two tables), and the
    retention purge, which only deletes sent rows, never touches a parked one.

    - `attempts`: deliveries the destination answered for this row (confirmed, or processing
      failed). A destination that was unavailable does not count.
    - `next_attempt_at`: a failed row is not claimed again before this time (NULL: due now).
    - `last_error`: why the last processing attempt failed (bounded, see LAST_ERROR_LENGTH).
    - `dead_lettered_at`: set when the row is parked after its last allowed attempt; the relay
      no longer claims it until `oms dlq replay` clears it.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (
        # The relay only ever scans unsent, unparked rows, oldest first (filtering on
        # next_attempt_at as it walks the index).
        Index(
            "ix_outbox_events_unsent",
            "created_at",
            postgresql_where=text("sent_at IS NULL AND dead_lettered_at IS NULL"),
            sqlite_where=text("sent_at IS NULL AND dead_lettered_at IS NULL"),
        ),
        # `oms dlq list|replay` and the parked-events gauge: the few parked rows, oldest first.
        Index(
            "ix_outbox_events_parked",
            "dead_lettered_at",
            postgresql_where=text("dead_lettered_at IS NOT NULL"),
            sqlite_where=text("dead_lettered_at IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    aggregate_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument, nullable=False)
    headers: Mapped[dict[str, str]] = mapped_column(JSONDocument, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(LAST_ERROR_LENGTH), nullable=True)
    dead_lettered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
