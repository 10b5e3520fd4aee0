"""Poison isolation: an event whose processing keeps failing is retried a bounded number of times
with back-off, then parked, and never holds up other orders; an unavailable destination is an
outage, not poison, and never counts an attempt.

Poison is real: outbox events naming an order that does not exist (processing raises
OrderMissingError), inserted directly."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.backoff import exponential_delay
from oms.broker.celery_app import create_celery_app
from oms.broker.contracts import (
    DEAD_LETTER_QUEUE_NAME,
    QUEUE_NAME,
    ROUTING_KEY,
    OrderCreatedEvent,
)
from oms.broker.topology import declare_topology
from oms.cache import MemoryOrderCache
from oms.db.models import OutboxEvent
from oms.db.session import create_engine, create_session_factory
from oms.outbox.dead_letters import (
    list_dead_letters,
    list_parked,
    replay_dead_letters,
    replay_parked,
)
from oms.outbox.destinations import InProcessDestination, RabbitPublisher
from oms.outbox.relay import (
    MAX_RETRY_DELAY_SECONDS,
    OutboxRelay,
    claim_statement,
    should_park,
)
from oms.processing.orders import describe_error
from oms.settings import Settings
from oms_consumer.dispatch import CeleryDispatcher
from oms_consumer.service import OrderEventConsumer
from tests.conftest import SettingsFactory, api_client
from tests.harness import free_port, settings_env
from tests.pipeline.support import (
    RABBITMQCTL,
    VENV_BIN,
    create_orders,
    create_orders_directly,
    database_sessions,
    drain_queue,
    eventually,
    order_rows,
    queue_depth,
    register_and_login,
    run_command,
    worker_process,
)


# --- helpers --------------------------------------------------------------------------------
async def insert_poison_events(
    settings: Settings, count: int, age: timedelta = timedelta(minutes=5)
) -> list[uuid.UUID]:
    """`order.created` events for orders that do not exist, older than anything else."""
    created_at = datetime.now(UTC) - age
    async with database_sessions(settings) as factory, factory() as session, session.begin():
        rows = []
        for number in range(count):
            event_id, order_id = uuid.uuid4(), uuid.uuid4()
            event = OrderCreatedEvent(event_id=event_id, order_id=order_id, occurred_at=created_at)
            rows.append(
                OutboxEvent(
                    id=event_id,
                    event_type="order.created",
                    aggregate_id=order_id,
                    payload=event.model_dump(mode="json"),
                    headers={},
                    created_at=created_at + timedelta(microseconds=number),
                )
            )
        session.add_all(rows)
    return [row.id for row in rows]


async def outbox_rows(settings: Settings) -> dict[uuid.UUID, OutboxEvent]:
    async with database_sessions(settings) as factory, factory() as session:
        rows = (await session.execute(select(OutboxEvent))).scalars()
        return {row.id: row for row in rows}


def in_process_relay(
    factory: async_sessionmaker[AsyncSession],
    *,
    max_retries: int = 3,
    retry_delay_seconds: float = 0.2,
    processing_factory: async_sessionmaker[AsyncSession] | None = None,
) -> OutboxRelay:
    return OutboxRelay(
        factory,
        InProcessDestination(processing_factory or factory, MemoryOrderCache(60)),
        asyncio.Event(),
        max_retries=max_retries,
        retry_delay_seconds=retry_delay_seconds,
    )


@contextlib.asynccontextmanager
async def relay_in_process(
    settings: Settings, **options: Any
) -> AsyncIterator[tuple[OutboxRelay, async_sessionmaker[AsyncSession]]]:
    """`in_process_relay` on an engine of its own; stopped, then disposed, on the way out."""
    async with database_sessions(settings) as factory:
        relay = in_process_relay(factory, **options)
        try:
            yield relay, factory
        finally:
            await relay.stop()


async def assert_every_pass_refused(relay: OutboxRelay, count: int) -> None:
    """Three passes each claim all `count` rows and hand none over: an outage, not poison."""
    for _ in range(3):
        outcome = await relay.relay_once()
        assert (outcome.claimed, outcome.delivered, outcome.failed) == (count, 0, 0)
        assert outcome.refused == count


# --- pure functions -------------------------------------------------------------------------
def test_retry_delay_doubles_from_the_base_up_to_the_cap() -> None:
    assert [exponential_delay(attempts, base=1.0, cap=10.0) for attempts in range(7)] == [
        0.0,
        1.0,
        2.0,
        4.0,
        8.0,
        10.0,
        10.0,
    ]
    assert exponential_delay(10_000, 60.0, MAX_RETRY_DELAY_SECONDS) == MAX_RETRY_DELAY_SECONDS
    assert exponential_delay(3, base=2_000.0, cap=900.0) == 2_000.0  # a base above the cap wins


def test_parking_follows_the_celery_task_retry_count() -> None:
    # ORDER_TASK_MAX_RETRIES = 3: the first attempt and three retries, then parked.
    assert [should_park(attempts, max_retries=3) for attempts in range(1, 6)] == [
        False,
        False,
        False,
        True,
        True,
    ]
    assert should_park(1, max_retries=0)


def test_stored_errors_cannot_break_the_update_that_stores_them() -> None:
    described = describe_error(ValueError("bad \udfff and \x00 here"))
    assert described.startswith("ValueError: bad ")
    assert "\x00" not in described
    described.encode("utf-8")  # no unpaired surrogate left: would raise


# --- relay against a real database ----------------------------------------------------------
@pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)
async def test_a_failing_event_is_retried_with_back_off_then_parked(
    make_settings: SettingsFactory,
) -> None:
    settings = await make_settings()
    [poison] = await insert_poison_events(settings, 1)
    async with relay_in_process(settings, max_retries=1, retry_delay_seconds=0.5) as (relay, _):
        first = await relay.relay_once()
        assert (first.claimed, first.delivered, first.failed, first.parked) == (1, 0, 1, 0)
        assert first.refused == 0  # a poison record is not an outage
        row = (await outbox_rows(settings))[poison]
        assert row.attempts == 1
        assert row.sent_at is None
        assert row.dead_lettered_at is None
        assert row.last_error is not None
        assert row.last_error.startswith("OrderMissingError")
        assert row.next_attempt_at is not None
        wait = (row.next_attempt_at - datetime.now(UTC)).total_seconds()
        assert 0 < wait <= 0.5

        assert (await relay.relay_once()).claimed == 0  # not due yet

        async def retried() -> bool:
            return (await relay.relay_once()).claimed == 1

        await eventually(retried, 5, interval=0.05, message="the retry to fall due")
        row = (await outbox_rows(settings))[poison]
        assert row.attempts == 2
        assert row.dead_lettered_at is not None  # one retry allowed: parked now
        assert relay.stats.parked == 1
        assert await relay.parked_count() == 1
        assert (await relay.relay_once()).claimed == 0  # parked rows are never claimed


@pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)
async def test_only_due_unparked_rows_are_claimed_oldest_first(
    make_settings: SettingsFactory,
) -> None:
    settings = await make_settings()
    parked, waiting, due = await insert_poison_events(settings, 3)
    await create_orders_directly(settings, 1)
    now = datetime.now(UTC)
    async with database_sessions(settings) as factory:
        async with factory() as session, session.begin():
            rows = {row.id: row for row in (await session.execute(select(OutboxEvent))).scalars()}
            rows[parked].dead_lettered_at = now
            rows[waiting].next_attempt_at = now + timedelta(minutes=1)
            rows[due].next_attempt_at = now - timedelta(seconds=1)
        async with factory() as session:
            claimed = list((await session.execute(claim_statement(now, 10))).scalars())
        fresh = next(row_id for row_id in rows if row_id not in (parked, waiting, due))
        assert [row.id for row in claimed] == [due, fresh]
        async with factory() as session:
            one = list((await session.execute(claim_statement(now, 1))).scalars())
        assert [row.id for row in one] == [due]


async def test_the_partial_index_serves_the_claim_on_postgres(
    make_settings: SettingsFactory,
) -> None:
    settings = await make_settings()
    assert settings.database_backend == "postgresql"
    engine = create_engine(settings)
    query = claim_statement(datetime.now(UTC), 100).compile(
        dialect=engine.dialect,
        compile_kwargs={"literal_binds": True},
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SET enable_seqscan = off"))
            plan = "\n".join(row[0] for row in await connection.execute(text(f"EXPLAIN {query}")))
    finally:
        await engine.dispose()
    assert "ix_outbox_events_unsent" in plan, plan
    assert "LockRows" in plan  # FOR UPDATE SKIP LOCKED kept


@pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)
async def test_an_unreachable_database_defers_the_batch_without_counting_attempts(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = await make_settings()
    order_ids = await create_orders_directly(settings, 5)
    poison = await insert_poison_events(settings, 2)
    # The relay's own database works; processing reaches a database that does not answer.
    if settings.database_backend == "postgresql":
        broken = settings.model_copy(update={"POSTGRES_PORT": free_port()})
    else:
        broken = settings.model_copy(update={"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}"})
    engine, broken_engine = create_engine(settings), create_engine(broken)
    factory = create_session_factory(engine)
    relay = in_process_relay(
        factory, max_retries=0, processing_factory=create_session_factory(broken_engine)
    )
    try:
        await assert_every_pass_refused(relay, 7)
        rows = await outbox_rows(settings)
        assert {row.attempts for row in rows.values()} == {0}
        assert {row.dead_lettered_at for row in rows.values()} == {None}
        assert {row.next_attempt_at for row in rows.values()} == {None}
        assert relay.stats.parked == 0

        # The database is back: everything good goes through; the poison (no retries
        # allowed here) is parked on its first real attempt.
        healthy = in_process_relay(factory, max_retries=0)
        outcome = await healthy.relay_once()
        assert (outcome.claimed, outcome.delivered, outcome.failed, outcome.parked) == (7, 5, 2, 2)
        await healthy.stop()
    finally:
        await relay.stop()
        await broken_engine.dispose()
        await engine.dispose()
    processed = await order_rows(settings)
    assert all(processed[order_id].processed for order_id in order_ids)
    rows = await outbox_rows(settings)
    assert {rows[event_id].attempts for event_id in poison} == {1}


async def test_a_batch_the_broker_does_not_confirm_never_counts_attempts(
    pipeline_settings_factory: SettingsFactory,
) -> None:
    settings = await pipeline_settings_factory()
    assert settings.RABBITMQ_URL
    vhost = settings.RABBITMQ_URL.rsplit("/", 1)[1]
    # The broker nacks every publish to new_order (a full queue refusing messages).
    await run_command(
        RABBITMQCTL, "set_policy", "-p", vhost, "refuse", "^new_order$",
        '{"max-length": 0, "overflow": "reject-publish"}', "--apply-to", "queues", "-q",
    )  # fmt: skip
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    async with connection:  # quorum queues accept one message beyond the limit: fill it
        topology = await declare_topology(await connection.channel(publisher_confirms=True))
        await topology.exchange.publish(aio_pika.Message(b"{}"), ROUTING_KEY)
    await create_orders_directly(settings, 3)
    engine = create_engine(settings)
    relay = OutboxRelay(
        create_session_factory(engine),
        RabbitPublisher(settings.RABBITMQ_URL, 5.0),
        asyncio.Event(),
        max_retries=0,
    )
    try:
        await assert_every_pass_refused(relay, 3)
        rows = await outbox_rows(settings)
        assert {(row.attempts, row.sent_at, row.dead_lettered_at) for row in rows.values()} == {
            (0, None, None)
        }
        await run_command(RABBITMQCTL, "clear_policy", "-p", vhost, "refuse", "-q")

        async def delivered() -> bool:
            return (await relay.relay_once()).delivered == 3

        await eventually(delivered, 15, interval=0.2, message="delivery once the broker takes it")
    finally:
        await relay.stop()
        await engine.dispose()
    assert {row.attempts for row in (await outbox_rows(settings)).values()} == {1}


# --- the scenario: 100 poison orders and 100 good ones, embedded mode -----------------
@pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)
async def test_poison_events_are_parked_and_never_stall_good_orders(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = await make_settings(
        RUN_OUTBOX_RELAY=True,
        RATE_LIMIT_ENABLED=False,
        OUTBOX_POLL_SECONDS=0.2,
        ORDER_TASK_MAX_RETRIES=2,
        ORDER_TASK_RETRY_DELAY_SECONDS=0.3,
    )
    assert settings.RABBITMQ_URL is None
    assert settings.OUTBOX_BATCH_SIZE == 100  # the poison alone fills a whole batch
    poison = set(await insert_poison_events(settings, 100))
    async with api_client(settings) as (_app, http):
        token = await register_and_login(http)
        started = time.monotonic()
        order_ids = {uuid.UUID(order_id) for order_id in await create_orders(http, token, 100)}

        async def all_processed() -> bool:
            rows = await order_rows(settings)
            return all(rows[order_id].processed for order_id in order_ids)

        await eventually(all_processed, 30, interval=0.2, message="the good orders processed")
        good_seconds = time.monotonic() - started

        async def all_parked() -> bool:
            rows = await outbox_rows(settings)
            return all(rows[event_id].dead_lettered_at is not None for event_id in poison)

        await eventually(all_parked, 30, interval=0.2, message="the poison parked")
    print(f"100 good orders processed in {good_seconds:.1f}s beside 100 poison events")
    rows = await outbox_rows(settings)
    assert {rows[event_id].attempts for event_id in poison} == {3}  # 1 + ORDER_TASK_MAX_RETRIES
    assert {rows[event_id].sent_at for event_id in poison} == {None}
    good_rows = [row for row in rows.values() if row.id not in poison]
    assert len(good_rows) == 100
    assert all(row.sent_at is not None and row.dead_lettered_at is None for row in good_rows)

    # `oms dlq list` / `replay` in the embedded mode (no RABBITMQ_URL): a real CLI process.
    env = settings_env(settings)
    listed = await run_command(str(VENV_BIN / "oms"), "dlq", "list", "--limit", "500", env=env)
    lines = [line.split("\t") for line in listed.splitlines() if line.strip()]
    assert len(lines) == 100, listed[-2000:]
    assert {uuid.UUID(fields[0]) for fields in lines} == poison
    assert {uuid.UUID(fields[1]) for fields in lines} == {
        rows[event_id].aggregate_id for event_id in poison
    }
    assert {fields[2] for fields in lines} == {"3"}
    assert all(datetime.fromisoformat(fields[3]) for fields in lines)
    assert all(fields[4].startswith("OrderMissingError") for fields in lines)

    replayed = await run_command(str(VENV_BIN / "oms"), "dlq", "replay", "--limit", "500", env=env)
    assert "replayed 100 parked outbox events" in replayed
    rows = await outbox_rows(settings)
    assert {
        (rows[event_id].dead_lettered_at, rows[event_id].attempts, rows[event_id].next_attempt_at)
        for event_id in poison
    } == {(None, 0, None)}
    # Nothing parked any more, and the command says so (on stderr; stdout stays tab-separated).
    emptied = await run_command(str(VENV_BIN / "oms"), "dlq", "list", env=env)
    assert emptied == "no parked orders (outbox)\n"
    # Due again: a relay claims them at once.
    async with relay_in_process(settings) as (relay, _):
        outcome = await relay.relay_once()
        assert (outcome.claimed, outcome.failed) == (100, 100)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_replay_of_parked_events_in_process(make_settings: SettingsFactory) -> None:
    settings = await make_settings()
    poison = await insert_poison_events(settings, 3)
    async with relay_in_process(settings, max_retries=0) as (relay, factory):
        assert (await relay.relay_once()).parked == 3
        listed = {event.event_id for event in await list_parked(factory, limit=2)}
        assert len(listed) == 2
        assert listed < set(poison)
        assert await replay_parked(factory, limit=2) == 2  # the same two: same order
        left = [event.event_id for event in await list_parked(factory, 10)]
        assert left == list(set(poison) - listed)
        # With RABBITMQ_URL set (here a dead port), `--outbox` still shows the parked rows.
        assert (await relay.relay_once()).parked == 2  # the two replayed ones, parked again
        env = settings_env(settings, RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
        listed_cli = await run_command(str(VENV_BIN / "oms"), "dlq", "list", "--outbox", env=env)
        assert {uuid.UUID(line.split("\t")[0]) for line in listed_cli.splitlines()} == set(poison)
        assert await replay_parked(factory, limit=10) == 3
        assert await replay_parked(factory, limit=10) == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_running_relay_counts_parked_events(make_settings: SettingsFactory) -> None:
    settings = await make_settings()
    await insert_poison_events(settings, 2)
    async with relay_in_process(settings, max_retries=0) as (relay, _):
        parked_before = REGISTRY.get_sample_value("oms_outbox_events_parked_total") or 0.0
        relay.start()

        async def gauge_shows_them() -> bool:
            return REGISTRY.get_sample_value("oms_outbox_parked_events") == 2

        await eventually(gauge_shows_them, 10, message="the parked gauge to read 2")
        parked_after = REGISTRY.get_sample_value("oms_outbox_events_parked_total") or 0.0
        assert parked_after - parked_before == 2
        assert relay.stats.consecutive_failures == 0  # poison is not a relay failure


# --- broker mode: a task that fails for good lands in new_order.dlq --------------------------
async def test_a_task_failing_for_good_is_dead_lettered_and_replayable(
    pipeline_settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = await pipeline_settings_factory(
        ORDER_TASK_MAX_RETRIES=1, ORDER_TASK_RETRY_DELAY_SECONDS=0.2
    )
    assert settings.RABBITMQ_URL
    [poison] = await insert_poison_events(settings, 1)
    [good] = await create_orders_directly(settings, 1)
    engine = create_engine(settings)
    relay = OutboxRelay(
        create_session_factory(engine),
        RabbitPublisher(settings.RABBITMQ_URL, 5.0),
        asyncio.Event(),
    )
    worker = worker_process(settings, tmp_path, free_port()).start()
    consumer = OrderEventConsumer(
        settings, CeleryDispatcher(create_celery_app(settings), attempts=2)
    )
    try:
        assert (await relay.relay_once()).delivered == 2
        assert await consumer.start()
        await worker.wait_ready()

        async def dead_lettered() -> int:
            return await queue_depth(settings.RABBITMQ_URL or "", DEAD_LETTER_QUEUE_NAME)

        await eventually(dead_lettered, 60, interval=0.3, message="the poison in the DLQ")
        assert (await order_rows(settings))[good].processed  # the good order went through
        [letter] = await list_dead_letters(settings.RABBITMQ_URL, limit=10)
        assert letter.message_id == str(poison)
        assert letter.reason.startswith("processing failed after 2 attempts: OrderMissingError")
        assert str(poison) in letter.body_preview

        # Replayed, it goes round once more (still poison) and comes back to the DLQ.
        assert await replay_dead_letters(settings.RABBITMQ_URL, limit=10) == 1

        async def back_again() -> bool:
            letters = await list_dead_letters(settings.RABBITMQ_URL or "", limit=10)
            return len(letters) == 1 and "failed after 2 attempts" in letters[0].reason

        await eventually(back_again, 60, interval=0.3, message="the replayed event to return")
    finally:
        await consumer.stop()
        await worker.stop()
        await relay.stop()
        await engine.dispose()
    logs = worker.logs()
    assert "the event is in new_order.dlq" in logs
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    async with connection:
        assert await drain_queue(await connection.channel(), QUEUE_NAME) == []
