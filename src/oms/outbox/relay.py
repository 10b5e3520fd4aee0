"""The transactional outbox relay: moves committed `outbox_events` rows to their destination.

Loop: wait for a wake-up (set by the API after each committed order) or the poll interval;
claim the oldest unsent rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent relays in
several API replicas take disjoint batches); deliver the batch; mark `sent_at` only for what the
destination confirmed, in the same transaction that holds the claim. A crash between confirm and
commit re-sends those rows later: delivery is at-least-once and processing is idempotent.

While the destination is down the relay backs off exponentially (capped) and rows simply wait:
an outage (DestinationUnavailableError, messages the broker did not confirm, the database or cache
unreachable) never counts as an attempt, so nothing accepted is ever parked or lost because a
broker or database died.

Poison isolation (embedded mode; see `oms.outbox.destinations` for how failures are told apart):
when processing *one record* fails, that row alone counts an attempt and is not claimed again
before `next_attempt_at` (exponential back-off from ORDER_TASK_RETRY_DELAY_SECONDS, capped at
MAX_RETRY_DELAY_SECONDS, a little jitter). After ORDER_TASK_MAX_RETRIES retries (the Celery
task's semantics) the row is parked: `dead_lettered_at` is set, the relay skips it for good and
`oms dlq list|replay` shows and releases it. Failing rows never block the others: each claim
takes the oldest *due* unparked rows.

Sent rows are purged after OUTBOX_RETENTION_HOURS, checked every PURGE_INTERVAL_SECONDS; parked
rows are never purged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oms.backoff import exponential_delay
from oms.broker.messages import OutboxRecord
from oms.cache import OrderCache
from oms.db.models import LAST_ERROR_LENGTH, OutboxEvent
from oms.db.session import session_scope
from oms.observability.pipeline_metrics import (
    OUTBOX_EVENTS_FAILED,
    OUTBOX_EVENTS_PARKED,
    OUTBOX_EVENTS_PUBLISHED,
    OUTBOX_PARKED,
    OUTBOX_PUBLISH_SECONDS,
    OUTBOX_RELAY_FAILURES,
)
from oms.outbox.destinations import (
    Delivery,
    DeliveryStatus,
    DestinationUnavailableError,
    InProcessDestination,
    OutboxDestination,
    RabbitPublisher,
)
from oms.settings import OutboxRelaySettings

logger = logging.getLogger("oms.outbox.relay")

PURGE_INTERVAL_SECONDS = 600.0
PARKED_GAUGE_INTERVAL_SECONDS = 15.0
INITIAL_BACKOFF_SECONDS = 0.2
# Longest wait between two processing attempts of one row (unless the base delay is longer).
MAX_RETRY_DELAY_SECONDS = 900.0
# Retry delays are shortened by up to this fraction, at random: rows that failed together
# (say, during one bad deploy) do not all come back in the same instant.
RETRY_JITTER = 0.1


def should_park(attempts: int, max_retries: int) -> bool:
    """After `attempts` failed attempts: the first one plus `max_retries` retries are used up."""
    return attempts > max_retries


def bounded_error(error: str | None, limit: int = LAST_ERROR_LENGTH) -> str:
    error = error or "unknown error"
    return error if len(error) <= limit else error[: limit - 1] + "\u2026"


def _attempt_fields(row: OutboxEvent) -> dict[str, object]:
    """How a failed attempt of a row is logged."""
    return {
        "event_id": str(row.id),
        "order_id": str(row.aggregate_id),
        "attempts": row.attempts,
        "error": row.last_error,
    }


def claim_statement(now: datetime, limit: int) -> Select[OutboxEvent]:
    """The oldest unsent, unparked rows that are due, locked (`SKIP LOCKED` on PostgreSQL:
    concurrent relays take disjoint batches). The partial index `ix_outbox_events_unsent`
    (`sent_at IS NULL AND dead_lettered_at IS NULL`, on created_at) serves it."""
    return (
        select(OutboxEvent)
        .where(
            OutboxEvent.sent_at.is_(None),
            OutboxEvent.dead_lettered_at.is_(None),
            or_(OutboxEvent.next_attempt_at.is_(None), OutboxEvent.next_attempt_at <= now),
        )
        .order_by(OutboxEvent.created_at, OutboxEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


@dataclass
class RelayStats:
    delivered: int = 0
    refused: int = 0
    processing_failures: int = 0
    parked: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    purged: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    claimed: int
    delivered: int
    # Processing failed for these records: attempt counted, retried later or parked.
    failed: int = 0
    parked: int = 0

    @property
    def refused(self) -> int:
        """Records the destination did not take (it is unavailable): the relay backs off."""
        return self.claimed - self.delivered - self.failed


class OutboxRelay:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        destination: OutboxDestination,
        wakeup: asyncio.Event,
        *,
        batch_size: int = 100,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        retention: timedelta = timedelta(hours=24),
        max_retries: int = 3,
        retry_delay_seconds: float = 60.0,
        max_retry_delay_seconds: float = MAX_RETRY_DELAY_SECONDS,
    ) -> None:
        self._session_factory = session_factory
        self._destination = destination
        self._wakeup = wakeup
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._max_backoff = max_backoff_seconds
        self._retention = retention
        self._max_retries = max_retries
        self._retry_delay = retry_delay_seconds
        self._max_retry_delay = max_retry_delay_seconds
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_purge = time.monotonic()
        self._next_parked_gauge = time.monotonic()
        # Monotonic time when the earliest row this relay scheduled for a retry falls due.
        self._earliest_retry: float | None = None
        self.stats = RelayStats()

    @classmethod
    def from_settings(
        cls,
        settings: OutboxRelaySettings,
        session_factory: async_sessionmaker[AsyncSession],
        cache: OrderCache,
        wakeup: asyncio.Event,
    ) -> OutboxRelay:
        destination: OutboxDestination
        if settings.RABBITMQ_URL:
            destination = RabbitPublisher(
                settings.RABBITMQ_URL, settings.OUTBOX_PUBLISH_TIMEOUT_SECONDS
            )
        else:
            destination = InProcessDestination(
                session_factory, cache, settings.ORDER_PROCESSING_DELAY_SECONDS
            )
        return cls(
            session_factory,
            destination,
            wakeup,
            batch_size=settings.OUTBOX_BATCH_SIZE,
            poll_seconds=settings.OUTBOX_POLL_SECONDS,
            max_backoff_seconds=settings.OUTBOX_MAX_BACKOFF_SECONDS,
            retention=timedelta(hours=settings.OUTBOX_RETENTION_HOURS),
            max_retries=settings.ORDER_TASK_MAX_RETRIES,
            retry_delay_seconds=settings.ORDER_TASK_RETRY_DELAY_SECONDS,
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
        await self._destination.close()

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                outcome = await self.relay_once()
                await self._purge_when_due()
                await self._refresh_parked_gauge_when_due(force=outcome.parked > 0)
            except (DestinationUnavailableError, SQLAlchemyError, OSError) as error:
                self._record_failure(repr(error))
                await self._pause(self._backoff())
                continue
            except Exception as error:
                logger.exception("outbox relay iteration failed")
                self._record_failure(repr(error))
                await self._pause(self._backoff())
                continue
            if outcome.refused:
                self._record_failure(f"{outcome.refused} events not confirmed")
                await self._pause(self._backoff())
                continue
            # Processing failures of single records are not the relay's failures: those rows
            # wait for their own retry time and the next claim moves on to other rows.
            self.stats.consecutive_failures = 0
            if outcome.claimed < self._batch_size:
                await self._wait_for_work(self._idle_wait())

    # --- one batch ----------------------------------------------------------------------------
    async def relay_once(self) -> BatchOutcome:
        """Connect if needed, then relay one batch: the loop's body without its waiting."""
        await self._destination.connect()
        return await self.relay_batch()

    async def relay_batch(self) -> BatchOutcome:
        """Claim, deliver and mark one batch; the claim's row locks last until the marks commit."""
        async with session_scope(self._session_factory) as session:
            now = datetime.now(UTC)
            rows = list((await session.execute(claim_statement(now, self._batch_size))).scalars())
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
            answers = await self._destination.deliver(records)
            OUTBOX_PUBLISH_SECONDS.observe(time.perf_counter() - started)
            if len(answers) != len(rows):
                raise RuntimeError(f"{len(answers)} answers for {len(rows)} records")
            now = datetime.now(UTC)
            delivered_ids = [
                row.id
                for row, answer in zip(rows, answers, strict=True)
                if answer.status is DeliveryStatus.DELIVERED
            ]
            if delivered_ids:
                await session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.id.in_(delivered_ids))
                    .values(sent_at=now, next_attempt_at=None, attempts=OutboxEvent.attempts + 1)
                    .execution_options(synchronize_session=False)
                )
            failed = [
                (row, answer)
                for row, answer in zip(rows, answers, strict=True)
                if answer.status is DeliveryStatus.FAILED
            ]
            parked = sum([self._schedule_retry_or_park(row, answer, now) for row, answer in failed])
        deferred = len(records) - len(delivered_ids) - len(failed)
        self.stats.delivered += len(delivered_ids)
        self.stats.refused += deferred
        self.stats.processing_failures += len(failed)
        self.stats.parked += parked
        OUTBOX_EVENTS_PUBLISHED.inc(len(delivered_ids))
        OUTBOX_EVENTS_FAILED.inc(len(records) - len(delivered_ids))
        OUTBOX_EVENTS_PARKED.inc(parked)
        if delivered_ids:
            logger.debug("relayed outbox events", extra={"count": len(delivered_ids)})
        return BatchOutcome(len(records), len(delivered_ids), len(failed), parked)

    def _schedule_retry_or_park(self, row: OutboxEvent, answer: Delivery, now: datetime) -> bool:
        """Count the failed attempt on the (claimed, session-bound) row; True if now parked."""
        row.attempts += 1
        row.last_error = bounded_error(answer.error)
        if answer.permanent or should_park(row.attempts, self._max_retries):
            row.dead_lettered_at = now
            row.next_attempt_at = None
            logger.error(
                "parked an outbox event after its last processing attempt; see `oms dlq list`",
                extra=_attempt_fields(row),
            )
            return True
        delay = exponential_delay(row.attempts, self._retry_delay, self._max_retry_delay)
        delay *= 1.0 - RETRY_JITTER * random.random()  # noqa: S311 - not security relevant
        row.next_attempt_at = now + timedelta(seconds=delay)
        due = time.monotonic() + delay
        if self._earliest_retry is None or due < self._earliest_retry:
            self._earliest_retry = due
        logger.warning(
            "outbox event processing failed; retrying later",
            extra={**_attempt_fields(row), "retry_in": round(delay, 3)},
        )
        return False

    async def parked_count(self) -> int:
        async with self._session_factory() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.dead_lettered_at.is_not(None))
            )
        return int(count or 0)

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

    async def _refresh_parked_gauge_when_due(self, *, force: bool = False) -> None:
        if not force and time.monotonic() < self._next_parked_gauge:
            return
        self._next_parked_gauge = time.monotonic() + PARKED_GAUGE_INTERVAL_SECONDS
        OUTBOX_PARKED.set(await self.parked_count())

    def _idle_wait(self) -> float:
        """The poll interval, or less when a row this relay scheduled falls due sooner."""
        if self._earliest_retry is None:
            return self._poll_seconds
        remaining = self._earliest_retry - time.monotonic()
        if remaining <= 0:
            self._earliest_retry = None
            return 0.0
        return min(self._poll_seconds, remaining)

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

    def _backoff(self) -> float:
        """The pause after the current run of failures (an outage, not a poison row)."""
        return exponential_delay(
            self.stats.consecutive_failures, INITIAL_BACKOFF_SECONDS, self._max_backoff
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
