"""The transactional outbox relay: moves committed `outbox_events` rows to their destination.

Loop: wait for a wake-up (set by the API after each committed order) or the poll interval;
claim the oldest unsent rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent relays in
several API replicas take disjoint batches); deliver the batch; mark `sent_at` only for what the
destination confirmed, in the same transaction that holds the claim. A crash between confirm and
commit re-sends those rows later: delivery is at-least-once and processing is idempotent.

While the destination is down the relay backs off exponentially (capped) and rows simply wait.
Sent rows are purged after OUTBOX_RETENTION_HOURS, checked every PURGE_INTERVAL_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.cache import OrderCache
from oms.db.models import OutboxEvent
from oms.db.session import create_engine, create_session_factory, session_scope
from oms.logging import configure_logging
from oms.pipeline.messages import OutboxRecord
from oms.pipeline.metrics import (
    OUTBOX_EVENTS_FAILED,
    OUTBOX_EVENTS_PUBLISHED,
    OUTBOX_PUBLISH_SECONDS,
    OUTBOX_RELAY_FAILURES,
)
from oms.pipeline.resources import build_order_cache
from oms.pipeline.sinks import EventSink, InProcessDispatcher, RabbitPublisher, SinkUnavailableError
from oms.settings import Settings, get_settings
from oms.telemetry import configure_tracing

logger = logging.getLogger("oms.pipeline.relay")

PURGE_INTERVAL_SECONDS = 600.0
INITIAL_BACKOFF_SECONDS = 0.2


def backoff_delay(failures: int, cap: float) -> float:
    """Exponential back-off after `failures` consecutive failures, capped."""
    if failures <= 0:
        return 0.0
    return min(cap, INITIAL_BACKOFF_SECONDS * 2.0 ** min(failures - 1, 30))


@dataclass
class RelayStats:
    delivered: int = 0
    refused: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    purged: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    claimed: int
    delivered: int

    @property
    def refused(self) -> int:
        return self.claimed - self.delivered


class OutboxRelay:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        sink: EventSink,
        wakeup: asyncio.Event,
        *,
        batch_size: int = 100,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        retention: timedelta = timedelta(hours=24),
    ) -> None:
        self._session_factory = session_factory
        self._sink = sink
        self._wakeup = wakeup
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._max_backoff = max_backoff_seconds
        self._retention = retention
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_purge = time.monotonic()
        self.stats = RelayStats()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        session_factory: async_sessionmaker[AsyncSession],
        cache: OrderCache,
        wakeup: asyncio.Event,
    ) -> OutboxRelay:
        sink: EventSink
        if settings.RABBITMQ_URL:
            sink = RabbitPublisher(settings.RABBITMQ_URL, settings.OUTBOX_PUBLISH_TIMEOUT_SECONDS)
        else:
            sink = InProcessDispatcher(
                session_factory, cache, settings.ORDER_PROCESSING_DELAY_SECONDS
            )
        return cls(
            session_factory,
            sink,
            wakeup,
            batch_size=settings.OUTBOX_BATCH_SIZE,
            poll_seconds=settings.OUTBOX_POLL_SECONDS,
            max_backoff_seconds=settings.OUTBOX_MAX_BACKOFF_SECONDS,
            retention=timedelta(hours=settings.OUTBOX_RETENTION_HOURS),
        )

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Finish the batch in hand (its rows are then marked), then close the connection."""
        self._stopping.set()
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, grace_seconds)
            except TimeoutError:
                logger.warning("outbox relay did not stop in time; cancelled")
            self._task = None
        await self._sink.close()

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                outcome = await self.relay_once()
                await self._purge_when_due()
            except (SinkUnavailableError, SQLAlchemyError, OSError) as error:
                self._record_failure(repr(error))
                await self._pause(backoff_delay(self.stats.consecutive_failures, self._max_backoff))
                continue
            except Exception as error:
                logger.exception("outbox relay iteration failed")
                self._record_failure(repr(error))
                await self._pause(backoff_delay(self.stats.consecutive_failures, self._max_backoff))
                continue
            if outcome.refused:
                self._record_failure(f"{outcome.refused} events not confirmed")
                await self._pause(backoff_delay(self.stats.consecutive_failures, self._max_backoff))
                continue
            self.stats.consecutive_failures = 0
            if outcome.claimed < self._batch_size:
                await self._wait_for_work(self._poll_seconds)

    # --- one batch ----------------------------------------------------------------------------
    async def relay_once(self) -> BatchOutcome:
        """Connect if needed, then relay one batch: the loop's body without its waiting."""
        await self._sink.connect()
        return await self.relay_batch()

    async def relay_batch(self) -> BatchOutcome:
        """Claim, deliver and mark one batch; the claim's row locks last until the marks commit."""
        async with session_scope(self._session_factory) as session:
            rows = (
                await session.execute(
                    select(OutboxEvent)
                    .where(OutboxEvent.sent_at.is_(None))
                    .order_by(OutboxEvent.created_at, OutboxEvent.id)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
            records = [
                OutboxRecord(
                    id=row.id,
                    event_type=row.event_type,
                    payload=row.payload,
                    created_at=row.created_at,
                    headers=dict(row.headers or {}),
                )
                for row in rows
            ]
            if not records:
                return BatchOutcome(0, 0)
            started = time.perf_counter()
            accepted = await self._sink.deliver(records)
            OUTBOX_PUBLISH_SECONDS.observe(time.perf_counter() - started)
            outcomes = list(zip(records, accepted, strict=True))
            delivered_ids = [record.id for record, ok in outcomes if ok]
            refused_ids = [record.id for record, ok in outcomes if not ok]
            now = datetime.now(UTC)
            if delivered_ids:
                await session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.id.in_(delivered_ids))
                    .values(sent_at=now, attempts=OutboxEvent.attempts + 1)
                    .execution_options(synchronize_session=False)
                )
            if refused_ids:
                await session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.id.in_(refused_ids))
                    .values(attempts=OutboxEvent.attempts + 1)
                    .execution_options(synchronize_session=False)
                )
        self.stats.delivered += len(delivered_ids)
        self.stats.refused += len(refused_ids)
        OUTBOX_EVENTS_PUBLISHED.inc(len(delivered_ids))
        OUTBOX_EVENTS_FAILED.inc(len(refused_ids))
        if delivered_ids:
            logger.debug("relayed outbox events", extra={"count": len(delivered_ids)})
        return BatchOutcome(len(records), len(delivered_ids))

    async def purge_sent(self, now: datetime | None = None) -> int:
        cutoff = (now or datetime.now(UTC)) - self._retention
        async with session_scope(self._session_factory) as session:
            result = await session.execute(
                delete(OutboxEvent)
                .where(OutboxEvent.sent_at.is_not(None), OutboxEvent.sent_at < cutoff)
                .execution_options(synchronize_session=False)
            )
        purged = int(getattr(result, "rowcount", 0) or 0)
        self.stats.purged += purged
        return purged

    # --- helpers ------------------------------------------------------------------------------
    async def _purge_when_due(self) -> None:
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
        purged = await self.purge_sent()
        if purged:
            logger.info("purged sent outbox events", extra={"count": purged})

    def _record_failure(self, error: str) -> None:
        OUTBOX_RELAY_FAILURES.inc()
        self.stats.failures += 1
        self.stats.consecutive_failures += 1
        self.stats.last_error = error
        log = logger.warning if self.stats.consecutive_failures <= 3 else logger.debug
        log(
            "outbox relay cannot deliver; backing off",
            extra={"error": error, "consecutive_failures": self.stats.consecutive_failures},
        )

    async def _pause(self, seconds: float) -> None:
        """Back-off sleep that a stop request interrupts (a wake-up does not: we are failing).

        The random factor spreads replicas that failed together."""
        jitter = random.uniform(0.5, 1.0)  # noqa: S311 - not security relevant
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds * jitter)

    async def _wait_for_work(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)


async def run_relay(settings: Settings, stop: asyncio.Event) -> None:
    """A relay on its own (`python -m oms.pipeline.relay`), for deployments that do not run it
    inside the API; wakes up on the poll interval only."""
    engine = create_engine(settings)
    cache = build_order_cache(settings)
    relay = OutboxRelay.from_settings(
        settings, create_session_factory(engine), cache, asyncio.Event()
    )
    relay.start()
    try:
        await stop.wait()
    finally:
        await relay.stop()
        await cache.close()
        await engine.dispose()


def main() -> None:
    settings = get_settings()
    configure_logging("relay", settings.LOG_LEVEL)
    configure_tracing("oms-relay")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_relay(settings, stop)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
