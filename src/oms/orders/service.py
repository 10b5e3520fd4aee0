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
from typing import TYPE_CHECKING, cast

import orjson
from sqlalchemy import Insert, Table, bindparam, delete, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.broker.contracts import OrderCreatedEvent
from oms.cache import OrderCache
from oms.db.models import IdempotencyKey, Order, OrderStatus, OutboxEvent, UserRole
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
    order: OrderOut
    replayed: bool


class InvalidCursorError(ValueError):
    pass


def serialize_order(order: Order | OrderOut) -> bytes:
    out = order if isinstance(order, OrderOut) else OrderOut.model_validate(order)
    return out.model_dump_json().encode()


def _new_rows(
    user_id: int, payload: OrderCreate, trace_headers: dict[str, str]
) -> tuple[OrderOut, dict[str, object], dict[str, object]]:
    """A new order as answered, and the column values of its row and of its outbox row."""
    now = datetime.now(UTC)
    order = OrderOut(
        id=uuid.uuid4(),
        user_id=user_id,
        items=payload.items,
        total_price=payload.total_price,
        status=OrderStatus.PENDING,
        created_at=now,
        updated_at=now,
    )
    event = OrderCreatedEvent(event_id=uuid.uuid4(), order_id=order.id, occurred_at=now)
    order_row: dict[str, object] = {
        "id": order.id,
        "user_id": user_id,
        "items": [item.model_dump(mode="json") for item in payload.items],
        "total_price": payload.total_price,
        "status": OrderStatus.PENDING,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    outbox_row: dict[str, object] = {
        "id": event.event_id,
        "event_type": event.event,
        "aggregate_id": order.id,
        "payload": event.model_dump(mode="json"),
        "headers": trace_headers,
        "created_at": now,
        "attempts": 0,
    }
    return order, order_row, outbox_row


def _bound_insert(table: Table, prefix: str, columns: list[str]) -> Insert:
    return insert(table).values(
        {name: bindparam(prefix + name, type_=table.c[name].type) for name in columns}
    )


_ORDERS = cast(Table, Order.__table__)
_OUTBOX = cast(Table, OutboxEvent.__table__)
# A new order and its outbox row set exactly their NOT NULL columns; the others stay null.
_ORDER_COLUMNS = [column.name for column in _ORDERS.c if not column.nullable]
_OUTBOX_COLUMNS = [column.name for column in _OUTBOX.c if not column.nullable]
# Built once: the statements are the same for every order, only their parameters differ (and
# building an INSERT per request cost more CPU than executing it).
_INSERT_ORDER = _bound_insert(_ORDERS, "", _ORDER_COLUMNS)
_INSERT_OUTBOX = _bound_insert(_OUTBOX, "", _OUTBOX_COLUMNS)
# PostgreSQL: both rows in one statement, the order's INSERT as a CTE of the outbox's.
_INSERT_BOTH = _bound_insert(_OUTBOX, "e_", _OUTBOX_COLUMNS).add_cte(
    _bound_insert(_ORDERS, "o_", _ORDER_COLUMNS).cte("new_order")
)


def _both_parameters(
    order_row: dict[str, object], outbox_row: dict[str, object]
) -> dict[str, object]:
    return {
        **{"o_" + name: value for name, value in order_row.items()},
        **{"e_" + name: value for name, value in outbox_row.items()},
    }


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
    """Each public method opens its own session, and only when it needs the database: a read
    the cache answers never opens one."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cache: OrderCache,
        idempotency_ttl: timedelta = timedelta(hours=24),
        on_outbox_write: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
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
        async with self._sessions() as session:
            if idempotency_key:
                created = await self._create_once(
                    session, user_id, payload, idempotency_key, trace_headers or {}
                )
            else:
                created = await self._insert(session, user_id, payload, trace_headers or {})
        if not created.replayed and self._on_outbox_write is not None:
            self._on_outbox_write()
        return created

    async def _insert(
        self,
        session: AsyncSession,
        user_id: int,
        payload: OrderCreate,
        trace_headers: dict[str, str],
    ) -> CreatedOrder:
        """The order and its outbox row. On PostgreSQL one statement (the outbox INSERT with the
        order's INSERT as a CTE) in autocommit: a single statement is its own transaction, so
        both rows commit together in one round trip, without BEGIN and COMMIT. SQLite cannot
        INSERT in a CTE: two statements in one transaction there."""
        order, order_row, outbox_row = _new_rows(user_id, payload, trace_headers)
        try:
            if session.get_bind().dialect.name == "postgresql":
                connection = await session.connection(
                    execution_options={"isolation_level": "AUTOCOMMIT"}
                )
                await connection.execute(_INSERT_BOTH, _both_parameters(order_row, outbox_row))
            else:
                async with session.begin():
                    await session.execute(_INSERT_ORDER, order_row)
                    await session.execute(_INSERT_OUTBOX, outbox_row)
        except IntegrityError as error:
            # The only constraint a new order can break: its user was deleted after their
            # token was issued.
            raise AccountDeletedError(user_id) from error
        return CreatedOrder(order, replayed=False)

    async def _create_once(
        self,
        session: AsyncSession,
        user_id: int,
        payload: OrderCreate,
        idempotency_key: str,
        trace_headers: dict[str, str],
    ) -> CreatedOrder:
        fingerprint = request_fingerprint(payload)
        try:
            async with session.begin():
                replay = await self._replay(session, user_id, idempotency_key, fingerprint)
                if replay is not None:
                    return CreatedOrder(replay, replayed=True)
                order, order_row, outbox_row = _new_rows(user_id, payload, trace_headers)
                # The key references the order: the order's row goes first.
                await session.execute(_INSERT_ORDER, order_row)
                await session.execute(_INSERT_OUTBOX, outbox_row)
                await session.execute(
                    insert(IdempotencyKey).values(
                        user_id=user_id,
                        key=idempotency_key,
                        request_fingerprint=fingerprint,
                        order_id=order.id,
                        created_at=order.created_at,
                    )
                )
        except IntegrityError as error:
            # Either a concurrent request with the same key committed first (answer as it
            # did), or the user was deleted after their token was issued.
            async with session.begin():
                replay = await self._replay(session, user_id, idempotency_key, fingerprint)
            if replay is None:
                raise AccountDeletedError(user_id) from error
            return CreatedOrder(replay, replayed=True)
        return CreatedOrder(order, replayed=False)

    async def _replay(
        self, session: AsyncSession, user_id: int, key: str, fingerprint: str
    ) -> OrderOut | None:
        record = await session.get(IdempotencyKey, (user_id, key))
        if record is None:
            return None
        if record.created_at < datetime.now(UTC) - self._idempotency_ttl:
            await session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.user_id == user_id, IdempotencyKey.key == key
                )
            )
            await session.flush()
            return None
        if record.request_fingerprint != fingerprint:
            raise IdempotencyKeyReusedError(key)
        order = await session.get(Order, record.order_id)
        return None if order is None else OrderOut.model_validate(order)

    # --- read -------------------------------------------------------------------------------
    async def get_json(
        self,
        order_id: uuid.UUID,
        viewer: TokenClaims,
        *,
        cached: bytes | None = None,
        cache_read: bool = False,
    ) -> bytes:
        """The order as JSON bytes, from the cache when it has it; owner or admin only.
        `cache_read`: the caller already read the cache (`cached` is its answer)."""
        if not cache_read:
            cached = await self._cache.get(str(order_id))
        if cached is not None:
            owner_id = int(orjson.loads(cached)["user_id"])
            if not can_see(viewer, owner_id):
                raise OrderNotFoundError(order_id)
            # An owner's own read is safe from any cache (a deleted owner's token is refused),
            # but an admin reading someone else's order from a process-local copy could see an
            # order whose account was deleted by another process: ask the database instead.
            if self._cache.shared or owner_id == viewer.user_id:
                return cached
        async with self._sessions() as session, session.begin():
            order = await session.get(Order, order_id)
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
        async with self._sessions() as session, session.begin():
            order = await session.get(Order, order_id)
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
            result = await session.execute(
                update(Order)
                .where(Order.id == order_id, Order.status == current)
                .values(status=target, updated_at=datetime.now(UTC), version=Order.version + 1)
                .returning(Order)
                .execution_options(synchronize_session=False)
            )
            updated = result.scalar_one_or_none()
            if updated is None:
                await session.refresh(order)
                raise TransitionRejectedError(
                    order.status, target, allowed_targets(order.status), True
                )
            await session.refresh(updated)
        await self._cache.put(str(updated.id), updated.version, serialize_order(updated))
        return updated, current

    # --- list -------------------------------------------------------------------------------
    async def list_for_user(
        self, user_id: int, viewer: TokenClaims, limit: int, cursor: str | None
    ) -> OrderPage:
        if not can_see(viewer, user_id):
            raise AccessDeniedError(user_id)
        after = decode_cursor(cursor) if cursor else None
        async with self._sessions() as session, session.begin():
            if viewer.user_id != user_id and not await UserRepository(session).exists(user_id):
                raise UserNotFoundError(user_id)
            query = select(Order).where(Order.user_id == user_id)
            if after is not None:
                query = query.where(tuple_(Order.created_at, Order.id) < tuple_(*after))
            query = query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
            rows = list((await session.execute(query)).scalars())
        page, more = rows[:limit], len(rows) > limit
        return OrderPage(
            items=[OrderOut.model_validate(order) for order in page],
            next_cursor=encode_cursor(page[-1]) if more and page else None,
        )
