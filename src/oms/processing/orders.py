"""Processing one created order: the single function the Celery task and the embedded mode's
in-process destination both call.

"Processed" means *seen by the pipeline*: `processed_at` records when the order's
`order.created` event went all the way through (broker, consumer, worker, or the embedded
relay). It says nothing about the order's content or status: the API already validated the
order when it accepted it (`OrderCreate`), and a CANCELED order is still stamped when its event
arrives, because its event did arrive. Nothing here re-checks or judges the order.

Idempotent by construction: the outcome is recorded with a compare-and-set on `processed_at IS
NULL`, so a redelivered or duplicated event finds the order already processed and changes
nothing. After the commit the fresh order goes into the cache with its new version, which the
cache prefers over any older copy a reader may be about to write.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.cache import OrderCache
from oms.db.models import Order
from oms.observability.pipeline_metrics import ORDER_PROCESSING_LAG, seconds_between
from oms.observability.tracing import tracer
from oms.orders.service import serialize_order

Outcome = Literal["processed", "already_processed"]

_tracer = tracer("oms.processing.orders")


class OrderMissingError(LookupError):
    """The event names an order the database does not have (yet): worth a retry."""


@dataclass(frozen=True, slots=True)
class ProcessingResult:
    order_id: str
    outcome: Outcome
    processed_at: str | None = None
    version: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        span.set_attribute("oms.outcome", result.outcome)
        return result


async def _compare_and_set(session: AsyncSession, order_id: uuid.UUID) -> tuple[Order, Outcome]:
    """Stamp the order unless it is stamped already; the row as it is afterwards."""
    # The compare-and-set first, returning the whole row: the usual case (a new order) costs
    # one statement. Nothing returned: already processed, by an earlier delivery or a
    # concurrent run that won (its UPDATE held the row lock; ours then matched nothing).
    order = (
        await session.execute(
            update(Order)
            .where(Order.id == order_id, Order.processed_at.is_(None))
            .values(processed_at=datetime.now(UTC), version=Order.version + 1)
            .returning(Order)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if order is not None:
        return order, "processed"
    order = await session.get(Order, order_id)
    if order is None:
        raise OrderMissingError(str(order_id))
    return order, "already_processed"


async def _process_order(
    session_factory: async_sessionmaker[AsyncSession],
    cache: OrderCache,
    order_id: uuid.UUID,
    delay_seconds: float,
) -> ProcessingResult:
    if delay_seconds:
        await asyncio.sleep(delay_seconds)
    async with session_factory() as session:
        if session.get_bind().dialect.name == "postgresql":
            # The compare-and-set is one statement, its own transaction: in autocommit it
            # needs no BEGIN and COMMIT, one round trip instead of three (as the API's create).
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            order, outcome = await _compare_and_set(session, order_id)
        else:
            async with session.begin():
                order, outcome = await _compare_and_set(session, order_id)
    if outcome == "processed" and order.processed_at is not None:
        ORDER_PROCESSING_LAG.observe(seconds_between(order.created_at, order.processed_at))
    # Also on "already_processed": a previous run may have committed and then failed to reach
    # the cache, and this retry is what repairs it.
    await cache.put(str(order.id), order.version, serialize_order(order))
    return ProcessingResult(
        order_id=str(order.id),
        outcome=outcome,
        processed_at=order.processed_at.isoformat() if order.processed_at else None,
        version=order.version,
    )


def describe_error(error: BaseException) -> str:
    """`Type: message`, safe to store and log: no NUL, no unpaired surrogate (either would make
    the very UPDATE that records the failure fail, and stall the relay)."""
    described = f"{type(error).__name__}: {error}"
    return described.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
