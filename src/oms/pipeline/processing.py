"""Processing one created order: the single function the Celery task and the in-process
dispatcher both call.

Idempotent by construction: the outcome is recorded with a compare-and-set on `processed_at IS
NULL`, so a redelivered or duplicated event finds the order already processed and changes
nothing. After the commit the fresh order goes into the cache with its new version, which the
cache prefers over any older copy a reader may be about to write.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.cache import OrderCache
from oms.db.models import Order, OrderStatus
from oms.db.session import session_scope
from oms.orders.service import serialize_order
from oms.pipeline.metrics import ORDER_PROCESSING_LAG, seconds_between
from oms.telemetry import tracer

Outcome = Literal["processed", "already_processed"]

_tracer = tracer("oms.pipeline.processing")


class OrderMissingError(LookupError):
    """The event names an order the database does not have (yet): worth a retry."""


@dataclass(frozen=True, slots=True)
class ProcessingResult:
    order_id: str
    outcome: Outcome
    valid: bool
    problems: list[str] = field(default_factory=list)
    processed_at: str | None = None
    version: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_order(
    status: OrderStatus, items: list[dict[str, Any]], total_price: Decimal
) -> list[str]:
    """What is wrong with an order, as messages; empty when it may be fulfilled."""
    problems: list[str] = []
    if status is OrderStatus.CANCELED:
        problems.append("order was canceled before it was processed")
    if not items:
        problems.append("order has no items")
    for index, item in enumerate(items):
        quantity = item.get("quantity")
        if not isinstance(quantity, int) or quantity < 1:
            problems.append(f"item {index} has an invalid quantity {quantity!r}")
        if not str(item.get("name", "")).strip():
            problems.append(f"item {index} has no name")
    if total_price <= 0:
        problems.append("total price is not positive")
    return problems


async def process_order(
    session_factory: async_sessionmaker[AsyncSession],
    cache: OrderCache,
    order_id: uuid.UUID,
    *,
    delay_seconds: float = 0.0,
) -> ProcessingResult:
    with _tracer.start_as_current_span(
        "process order", attributes={"oms.order_id": str(order_id)}
    ) as span:
        result = await _process_order(session_factory, cache, order_id, delay_seconds)
        span.set_attributes({"oms.outcome": result.outcome, "oms.order_valid": result.valid})
        return result


async def _process_order(
    session_factory: async_sessionmaker[AsyncSession],
    cache: OrderCache,
    order_id: uuid.UUID,
    delay_seconds: float,
) -> ProcessingResult:
    if delay_seconds:
        await asyncio.sleep(delay_seconds)
    async with session_scope(session_factory) as session:
        # The compare-and-set first, returning the whole row: the usual case (a new order)
        # costs one statement. Nothing returned: already processed, by an earlier delivery or
        # a concurrent run that won (its UPDATE held the row lock; ours then matched nothing).
        order = (
            await session.execute(
                update(Order)
                .where(Order.id == order_id, Order.processed_at.is_(None))
                .values(processed_at=datetime.now(UTC), version=Order.version + 1)
                .returning(Order)
                .execution_options(synchronize_session=False)
            )
        ).scalar_one_or_none()
        outcome: Outcome = "processed"
        if order is None:
            outcome = "already_processed"
            order = await session.get(Order, order_id)
            if order is None:
                raise OrderMissingError(str(order_id))
        # The update changes neither status, items nor price: these are what was processed.
        problems = validate_order(order.status, order.items, order.total_price)
    if outcome == "processed" and order.processed_at is not None:
        ORDER_PROCESSING_LAG.observe(seconds_between(order.created_at, order.processed_at))
    # Also on "already_processed": a previous run may have committed and then failed to reach
    # the cache, and this retry is what repairs it.
    await cache.put(str(order.id), order.version, serialize_order(order))
    return ProcessingResult(
        order_id=str(order.id),
        outcome=outcome,
        valid=not problems,
        problems=problems,
        processed_at=order.processed_at.isoformat() if order.processed_at else None,
        version=order.version,
    )
