"""The shared processing function: what "processed" means, idempotency, cache freshness."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from oms.cache import MemoryOrderCache
from oms.db.models import Order, OrderStatus
from oms.processing.orders import OrderMissingError, process_order
from tests.conftest import SettingsFactory
from tests.pipeline.support import (
    create_orders_directly,
    database_sessions,
    order_cache,
    order_rows,
)

BOTH = pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)


async def test_a_canceled_order_is_still_seen_by_the_pipeline(
    make_settings: SettingsFactory,
) -> None:
    """`processed_at` means "seen by the pipeline", not "fulfillable": the event of an order
    canceled before its processing still goes through and stamps it; the status stays."""
    settings = await make_settings()
    [order_id] = await create_orders_directly(settings, 1)
    async with database_sessions(settings) as factory:
        async with factory() as session, session.begin():
            order = await session.get(Order, order_id)
            assert order is not None
            order.status = OrderStatus.CANCELED
        result = await process_order(factory, MemoryOrderCache(60), order_id)
        async with factory() as session:
            stamped = await session.get(Order, order_id)
    assert result.outcome == "processed"
    assert result.processed_at is not None
    assert stamped is not None
    assert (stamped.status, stamped.processed_at is not None) == (OrderStatus.CANCELED, True)


@BOTH
async def test_processing_twice_changes_nothing_the_second_time(
    make_settings: SettingsFactory,
) -> None:
    settings = await make_settings()
    [order_id] = await create_orders_directly(settings, 1)
    async with database_sessions(settings) as factory, order_cache(settings) as cache:
        # A reader cached the unprocessed order (version 1) before the worker ran.
        await cache.put(str(order_id), 1, b'{"processed_at": null}')
        first = await process_order(factory, cache, order_id)
        second = await process_order(factory, cache, order_id)
        cached = await cache.get(str(order_id))
    assert (first.outcome, first.version) == ("processed", 2)
    assert (second.outcome, second.version) == ("already_processed", 2)
    assert second.processed_at == first.processed_at
    row = (await order_rows(settings))[order_id]
    assert (row.version, row.processed) == (2, True)
    assert cached is not None
    assert orjson.loads(cached)["processed_at"] is not None


@BOTH
async def test_concurrent_runs_of_one_event_record_it_once(make_settings: SettingsFactory) -> None:
    settings = await make_settings()
    [order_id] = await create_orders_directly(settings, 1)
    async with database_sessions(settings) as factory:
        results = await asyncio.gather(
            *(process_order(factory, MemoryOrderCache(60), order_id) for _ in range(4))
        )
    assert sorted(result.outcome for result in results) == [
        "already_processed",
        "already_processed",
        "already_processed",
        "processed",
    ]
    assert (await order_rows(settings))[order_id].version == 2


async def test_unknown_order_is_an_error_worth_retrying(make_settings: SettingsFactory) -> None:
    settings = await make_settings()
    async with database_sessions(settings) as factory:
        with pytest.raises(OrderMissingError):
            await process_order(factory, MemoryOrderCache(60), uuid.uuid4())
