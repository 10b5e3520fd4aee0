"""Order use cases: create (idempotent, with its outbox event), read, change status, list.

Used by the API's thin routers; each public method is one database transaction.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import orjson
from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from oms.cache import OrderCache
from oms.db.models import IdempotencyKey, Order, OrderStatus, OutboxEvent, UserRole
from oms.messaging.contracts import OrderCreatedEvent
from oms.orders.schemas import OrderCreate, OrderOut, OrderPage
from oms.orders.state_machine import allowed_targets, decide_transition
from oms.users.repository import UserRepository

if TYPE_CHECKING:
    # Only annotations: the worker serializes orders with this module and has no JWT library.
    from oms.security.tokens import TokenClaims


class OrderNotFoundError(Exception):
    pass


class UserNotFoundError(Exception):
    """The user an admin asked about does not exist."""


class AccountDeletedError(Exception):
    """The account acting (the token's subject) was deleted after its token was issued."""


class AccessDeniedError(Exception):
    pass


class IdempotencyKeyReusedError(Exception):
    """The key was already used by this user for a different request body."""


# Not frozen: an exception's __traceback__ and __context__ are assigned as it propagates (through
# FastAPI's exit stacks to the problem handlers), which a frozen dataclass refuses.
@dataclass(eq=False)
class TransitionRejectedError(Exception):
    current: OrderStatus
    target: OrderStatus
    allowed: list[OrderStatus]
    illegal: bool


@dataclass(frozen=True, slots=True)
class CreatedOrder:
    order: Order
    replayed: bool


class InvalidCursorError(ValueError):
    pass


def serialize_order(order: Order) -> bytes:
    return OrderOut.model_validate(order).model_dump_json().encode()


def request_fingerprint(payload: OrderCreate) -> str:
    canonical = orjson.dumps(payload.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


# Cursors name a moment an order was created at: anything outside these years is not one we
# issued, and converting it to UTC (or handing it to the database) could overflow.
CURSOR_YEARS = range(2000, 9000)


def encode_cursor(order: Order) -> str:
    raw = f"{order.created_at.astimezone(UTC).isoformat()}|{order.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, order_id = raw.split("|", 1)
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None or created_at.year not in CURSOR_YEARS:
            raise ValueError("not a cursor time")
        return created_at.astimezone(UTC), uuid.UUID(order_id)
    except (ValueError, UnicodeDecodeError, OverflowError) as error:
        raise InvalidCursorError("cursor is not one this API returned") from error


def can_see(viewer: TokenClaims, owner_id: int) -> bool:
    return viewer.role is UserRole.ADMIN or viewer.user_id == owner_id


class OrderService:
    def __init__(
        self,
        session: AsyncSession,
        cache: OrderCache,
        idempotency_ttl: timedelta = timedelta(hours=24),
        on_outbox_write: Callable[[], None] | None = None,
    ) -> None:
        self._session = session
        self._cache = cache
        self._idempotency_ttl = idempotency_ttl
        self._on_outbox_write = on_outbox_write

    # --- create -----------------------------------------------------------------------------
    async def create(
        self,
        user_id: int,
        payload: OrderCreate,
        idempotency_key: str | None = None,
        trace_headers: dict[str, str] | None = None,
    ) -> CreatedOrder:
        fingerprint = request_fingerprint(payload) if idempotency_key else ""
        try:
            async with self._session.begin():
                if idempotency_key:
                    replay = await self._replay(user_id, idempotency_key, fingerprint)
                    if replay is not None:
                        return CreatedOrder(replay, replayed=True)
                order = self._add_order(user_id, payload, trace_headers or {})
                if idempotency_key:
                    # The key references the order: the order's row must exist first.
                    await self._session.flush()
                    self._session.add(
                        IdempotencyKey(
                            user_id=user_id,
                            key=idempotency_key,
                            request_fingerprint=fingerprint,
                            order_id=order.id,
                        )
                    )
                await self._session.flush()
        except IntegrityError as error:
            # Either a concurrent request with the same key committed first (answer as it
            # did), or the user was deleted after their token was issued.
            replay = None
            if idempotency_key:
                async with self._session.begin():
                    replay = await self._replay(user_id, idempotency_key, fingerprint)
            if replay is None:
                raise AccountDeletedError(user_id) from error
            return CreatedOrder(replay, replayed=True)
        if self._on_outbox_write is not None:
            self._on_outbox_write()
        return CreatedOrder(order, replayed=False)

    def _add_order(
        self, user_id: int, payload: OrderCreate, trace_headers: dict[str, str]
    ) -> Order:
        now = datetime.now(UTC)
        order = Order(
            id=uuid.uuid4(),
            user_id=user_id,
            items=[item.model_dump(mode="json") for item in payload.items],
            total_price=payload.total_price,
            status=OrderStatus.PENDING,
            created_at=now,
            updated_at=now,
            version=1,
        )
        event = OrderCreatedEvent(event_id=uuid.uuid4(), order_id=order.id, occurred_at=now)
        self._session.add(order)
        self._session.add(
            OutboxEvent(
                id=event.event_id,
                event_type=event.event,
                aggregate_id=order.id,
                payload=event.model_dump(mode="json"),
                headers=trace_headers,
                created_at=now,
                attempts=0,
            )
        )
        return order

    async def _replay(self, user_id: int, key: str, fingerprint: str) -> Order | None:
        record = await self._session.get(IdempotencyKey, (user_id, key))
        if record is None:
            return None
        if record.created_at < datetime.now(UTC) - self._idempotency_ttl:
            await self._session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.user_id == user_id, IdempotencyKey.key == key
                )
            )
            await self._session.flush()
            return None
        if record.request_fingerprint != fingerprint:
            raise IdempotencyKeyReusedError(key)
        return await self._session.get(Order, record.order_id)

    # --- read -------------------------------------------------------------------------------
    async def get_json(self, order_id: uuid.UUID, viewer: TokenClaims) -> bytes:
        """The order as JSON bytes, from the cache when it has it; owner or admin only."""
        cached = await self._cache.get(str(order_id))
        if cached is not None:
            if not can_see(viewer, int(orjson.loads(cached)["user_id"])):
                raise OrderNotFoundError(order_id)
            return cached
        async with self._session.begin():
            order = await self._session.get(Order, order_id)
        if order is None or not can_see(viewer, order.user_id):
            raise OrderNotFoundError(order_id)
        body = serialize_order(order)
        await self._cache.put(str(order.id), order.version, body)
        return body

    # --- update -----------------------------------------------------------------------------
    async def change_status(
        self, order_id: uuid.UUID, target: OrderStatus, viewer: TokenClaims
    ) -> tuple[Order, OrderStatus]:
        """Apply a legal transition; returns the updated order and the status it left."""
        async with self._session.begin():
            order = await self._session.get(Order, order_id)
            if order is None or not can_see(viewer, order.user_id):
                raise OrderNotFoundError(order_id)
            current = order.status
            decision = decide_transition(current, target, viewer.role)
            if not decision.allowed:
                raise TransitionRejectedError(
                    current, target, allowed_targets(current), decision.is_illegal
                )
            # Compare-and-set on the status we decided from: of two concurrent PATCHes on one
            # order, only one can match; the loser sees the new status and gets a 409.
            result = await self._session.execute(
                update(Order)
                .where(Order.id == order_id, Order.status == current)
                .values(status=target, updated_at=datetime.now(UTC), version=Order.version + 1)
                .returning(Order)
                .execution_options(synchronize_session=False)
            )
            updated = result.scalar_one_or_none()
            if updated is None:
                await self._session.refresh(order)
                raise TransitionRejectedError(
                    order.status, target, allowed_targets(order.status), True
                )
            await self._session.refresh(updated)
        await self._cache.put(str(updated.id), updated.version, serialize_order(updated))
        return updated, current

    # --- list -------------------------------------------------------------------------------
    async def list_for_user(
        self, user_id: int, viewer: TokenClaims, limit: int, cursor: str | None
    ) -> OrderPage:
        if not can_see(viewer, user_id):
            raise AccessDeniedError(user_id)
        after = decode_cursor(cursor) if cursor else None
        async with self._session.begin():
            if viewer.user_id != user_id and not await UserRepository(self._session).exists(
                user_id
            ):
                raise UserNotFoundError(user_id)
            query = select(Order).where(Order.user_id == user_id)
            if after is not None:
                query = query.where(tuple_(Order.created_at, Order.id) < tuple_(*after))
            query = query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
            rows = list((await self._session.execute(query)).scalars())
        page, more = rows[:limit], len(rows) > limit
        return OrderPage(
            items=[OrderOut.model_validate(order) for order in page],
            next_cursor=encode_cursor(page[-1]) if more and page else None,
        )
