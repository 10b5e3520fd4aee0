"""The shared processing function: validation, idempotency, cache freshness."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import orjson
import pytest

from oms.cache import MemoryOrderCache
from oms.db.models import OrderStatus
from oms.db.session import create_engine, create_session_factory
from oms.pipeline.processing import OrderMissingError, process_order, validate_order
from oms.resources import build_order_cache
from tests.conftest import SettingsFactory
from tests.pipeline.support import create_orders_directly, order_rows

BOTH = pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)


def test_validation_accepts_a_normal_order() -> None:
    items = [{"name": "book", "quantity": 2}]
    assert validate_order(OrderStatus.PENDING, items, Decimal("19.90")) == []


@pytest.mark.parametrize(
    ("status", "items", "total", "expected"),
    [
        (OrderStatus.CANCELED, [{"name": "a", "quantity": 1}], "1", "canceled"),
        (OrderStatus.PENDING, [], "1", "no items"),
        (OrderStatus.PENDING, [{"name": "a", "quantity": 0}], "1", "invalid quantity"),
        (OrderStatus.PENDING, [{"name": " ", "quantity": 1}], "1", "no name"),
        (OrderStatus.PENDING, [{"name": "a", "quantity": 1}], "0", "not positive"),
    ],
)
def test_validation_names_each_problem(
    status: OrderStatus, items: list[dict[str, object]], total: str, expected: str
) -> None:
    problems = validate_order(status, items, Decimal(total))
    assert len(problems) == 1
    assert expected in problems[0]


@BOTH
async def test_processing_twice_changes_nothing_the_second_time(
    make_settings: SettingsFactory,
) -> None:
    settings = await make_settings()
    [order_id] = await create_orders_directly(settings, 1)
    engine = create_engine(settings)
    cache = build_order_cache(settings)
    factory = create_session_factory(engine)
    try:
        # A reader cached the unprocessed order (version 1) before the worker ran.
        await cache.put(str(order_id), 1, b'{"processed_at": null}')
        first = await process_order(factory, cache, order_id)
        second = await process_order(factory, cache, order_id)
        cached = await cache.get(str(order_id))
    finally:
        await cache.close()
        await engine.dispose()
    assert (first.outcome, first.valid, first.version) == ("processed", True, 2)
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
    engine = create_engine(settings)
    factory = create_session_factory(engine)
    try:
        results = await asyncio.gather(
            *(process_order(factory, MemoryOrderCache(60), order_id) for _ in range(4))
        )
    finally:
        await engine.dispose()
    assert sorted(result.outcome for result in results) == [
        "already_processed",
        "already_processed",
        "already_processed",
        "processed",
    ]
    assert (await order_rows(settings))[order_id].version == 2


async def test_unknown_order_is_an_error_worth_retrying(make_settings: SettingsFactory) -> None:
    settings = await make_settings()
    engine = create_engine(settings)
    try:
        with pytest.raises(OrderMissingError):
            await process_order(create_session_factory(engine), MemoryOrderCache(60), uuid.uuid4())
    finally:
        await engine.dispose()
