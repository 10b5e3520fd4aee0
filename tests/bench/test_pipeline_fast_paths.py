"""The consumer only sends tasks: its Celery app has no result backend, so it no longer
subscribes to (and never forgets) one Redis result channel per task. The worker keeps it.
And the worker stamps a new order in one statement, without BEGIN and COMMIT."""

from __future__ import annotations

from typing import Any

import orjson
from celery.backends.base import DisabledBackend
from celery.backends.redis import RedisBackend
from sqlalchemy import event

from oms.broker.celery_app import create_celery_app
from oms.cache import MemoryOrderCache
from oms.db.session import create_engine, create_session_factory
from oms.processing.orders import process_order
from oms.settings import Settings
from tests.conftest import SettingsFactory
from tests.pipeline.support import create_orders_directly


async def test_only_the_sending_side_goes_without_results(make_settings: SettingsFactory) -> None:
    settings: Settings = await make_settings(RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/")
    assert settings.REDIS_URL_CELERY
    sender = create_celery_app(settings, main="oms_consumer", results=False)
    assert isinstance(sender.backend, DisabledBackend)
    worker = create_celery_app(settings, main="oms_worker")
    assert isinstance(worker.backend, RedisBackend)


async def test_processing_a_new_order_is_one_statement_without_begin_or_commit(
    make_settings: SettingsFactory,
) -> None:
    """On PostgreSQL the compare-and-set runs in autocommit: no BEGIN and COMMIT round trips
    around the one UPDATE. The outcome and the cache are those of the transactional path."""
    settings = await make_settings()
    [order_id] = await create_orders_directly(settings, 1)
    engine = create_engine(settings)
    statements: list[str] = []  # through SQLAlchemy (prepared, with parameters)
    driver_queries: list[str] = []  # asyncpg's simple queries: BEGIN, COMMIT, ROLLBACK

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.split()[0].upper())

    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if not getattr(driver, "_query_loggers", ()):
            driver.add_query_logger(lambda record: driver_queries.append(record.query))

    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    event.listen(engine.sync_engine, "checkout", on_checkout)
    try:
        factory = create_session_factory(engine)
        cache = MemoryOrderCache(60)
        first = await process_order(factory, cache, order_id)
        assert (statements, driver_queries) == (["UPDATE"], [])
        statements.clear()
        second = await process_order(factory, cache, order_id)
        # Already processed: the UPDATE matched nothing, one read for the row.
        assert (statements, driver_queries) == (["UPDATE", "SELECT"], [])
    finally:
        await engine.dispose()
    assert (first.outcome, first.version) == ("processed", 2)
    assert (second.outcome, second.version, second.processed_at) == (
        "already_processed",
        2,
        first.processed_at,
    )
    cached = await cache.get(str(order_id))
    assert cached is not None
    assert orjson.loads(cached)["processed_at"] is not None
